//! One row's least-squares solve against fixed factors of the other side, and the loop that
//! spreads a side's rows over threads.
//!
//! Factors are row-major `f64` here: the normal equations of a rank-64 model lose too much in
//! `f32`, and the model hands out `f32` only at the end.

use std::sync::{Mutex, PoisonError};

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Accum, Mat, MatMut, MatRef, Par};

use super::data::CompressedRows;

/// Conjugate-gradient steps per row and half-iteration in implicit mode. Each solve starts from
/// the row's previous factor, so a few steps per iteration track the exact solution closely; 3
/// is what the `implicit` library uses by default.
pub const CONJUGATE_GRADIENT_STEPS: usize = 3;

/// A residual this small (squared norm) means the row is solved.
const RESIDUAL_SQUARED_MIN: f64 = 1e-20;

/// Rows handed to a thread at a time: small enough to balance users with very different numbers
/// of ratings, large enough that taking the next block costs nothing.
const BLOCK_ROWS: usize = 64;

/// What the solve of one row needs besides the row's own entries.
#[derive(Debug, Clone, Copy)]
pub(super) struct Problem<'a> {
    pub(super) rank: usize,
    pub(super) regularization: f64,
    /// `None` for explicit feedback.
    pub(super) implicit: Option<Implicit<'a>>,
    /// The other side's factors, row-major `rows × rank`.
    pub(super) other: &'a [f64],
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Implicit<'a> {
    pub(super) alpha: f64,
    /// `YᵀY` of the other side, row-major `rank × rank`, without regularisation.
    pub(super) gram: &'a [f64],
}

/// Per-thread buffers, so that solving a row allocates nothing.
pub(super) struct Scratch {
    gathered: Vec<f64>,
    normal: Mat<f64>,
    rhs: Vec<f64>,
    residual: Vec<f64>,
    direction: Vec<f64>,
    product: Vec<f64>,
    stack: MemBuffer,
}

impl Scratch {
    pub(super) fn new(rank: usize) -> Scratch {
        let stack =
            llt::factor::cholesky_in_place_scratch::<f64>(rank, Par::Seq, Default::default())
                .or(llt::solve::solve_in_place_scratch::<f64>(rank, 1, Par::Seq));
        Scratch {
            gathered: Vec::new(),
            normal: Mat::zeros(rank, rank),
            rhs: vec![0.0; rank],
            residual: vec![0.0; rank],
            direction: vec![0.0; rank],
            product: vec![0.0; rank],
            stack: MemBuffer::new(stack),
        }
    }
}

/// Solves every row of one side in place, `threads` rows at a time. Each row depends only on
/// its own entries, its previous value and the other side, so the result does not depend on
/// the number of threads or on which thread solved which row.
pub(super) fn solve_side(
    factors: &mut [f64],
    rows: &CompressedRows,
    problem: Problem<'_>,
    threads: usize,
) {
    assert_eq!(factors.len(), rows.row_count() * problem.rank);
    for_each_row(factors, problem.rank, threads, |row, factor, scratch| {
        let (columns, values) = rows.row(row);
        match problem.implicit {
            None => solve_explicit_row(&problem, columns, values, scratch, factor),
            Some(implicit) => {
                solve_implicit_row(&problem, implicit, columns, values, scratch, factor)
            }
        }
    });
}

/// Calls `solve(row, row_values, scratch)` for every `width`-wide row of `output`, spread over
/// `threads` scoped threads that take blocks of rows from a shared queue.
pub(super) fn for_each_row<F>(output: &mut [f64], width: usize, threads: usize, solve: F)
where
    F: Fn(usize, &mut [f64], &mut Scratch) + Sync,
{
    let blocks = Mutex::new(output.chunks_mut(BLOCK_ROWS * width).enumerate());
    let work = || {
        let mut scratch = Scratch::new(width);
        loop {
            let next = blocks.lock().unwrap_or_else(PoisonError::into_inner).next();
            let Some((block, chunk)) = next else { break };
            for (offset, row) in chunk.chunks_mut(width).enumerate() {
                solve(block * BLOCK_ROWS + offset, row, &mut scratch);
            }
        }
    };
    if threads <= 1 {
        work();
        return;
    }
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(work);
        }
    });
}

/// Explicit feedback, ALS-WR: `(Y_uᵀ Y_u + λ·n_u·I) x = Y_uᵀ r_u` over the `n_u` rated
/// columns, solved by Cholesky. A row without entries gets a zero factor.
pub(super) fn solve_explicit_row(
    problem: &Problem<'_>,
    columns: &[u32],
    values: &[f32],
    scratch: &mut Scratch,
    factor: &mut [f64],
) {
    if columns.is_empty() {
        factor.fill(0.0);
        return;
    }
    let rank = problem.rank;
    gather(problem.other, rank, columns, None, &mut scratch.gathered);
    let rhs = &mut scratch.rhs;
    rhs.fill(0.0);
    for (row, &value) in scratch.gathered.chunks_exact(rank).zip(values) {
        for (sum, &y) in rhs.iter_mut().zip(row) {
            *sum += y * f64::from(value);
        }
    }
    let ridge = problem.regularization * columns.len() as f64;
    solve_normal_equations(rank, None, ridge, scratch, factor);
}

/// Implicit feedback, Hu–Koren–Volinsky: `(YᵀY + Yᵀ(C_u − I)Y + λI) x = Yᵀ C_u p_u`, with
/// preference `p = 1` for a positive value and 0 otherwise, and confidence `c = 1 + α·|r|`.
/// Solved by [`CONJUGATE_GRADIENT_STEPS`] conjugate-gradient steps from the row's previous
/// factor; only the row's own columns are visited, the rest is in the precomputed `YᵀY`.
///
/// On x86-64 CPUs with AVX2 the same code is compiled for 256-bit vectors (chosen at run time).
/// Without FMA the arithmetic of each lane is unchanged, so the factors are identical either way.
pub(super) fn solve_implicit_row(
    problem: &Problem<'_>,
    implicit: Implicit<'_>,
    columns: &[u32],
    values: &[f32],
    scratch: &mut Scratch,
    factor: &mut [f64],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { solve_implicit_row_avx2(problem, implicit, columns, values, scratch, factor) };
        return;
    }
    solve_implicit_row_portable(problem, implicit, columns, values, scratch, factor);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn solve_implicit_row_avx2(
    problem: &Problem<'_>,
    implicit: Implicit<'_>,
    columns: &[u32],
    values: &[f32],
    scratch: &mut Scratch,
    factor: &mut [f64],
) {
    solve_implicit_row_portable(problem, implicit, columns, values, scratch, factor);
}

#[inline(always)]
fn solve_implicit_row_portable(
    problem: &Problem<'_>,
    implicit: Implicit<'_>,
    columns: &[u32],
    values: &[f32],
    scratch: &mut Scratch,
    factor: &mut [f64],
) {
    if columns.is_empty() {
        factor.fill(0.0);
        return;
    }
    let apply = |vector: &[f64], output: &mut [f64]| {
        apply_implicit(problem, implicit, columns, values, vector, output)
    };
    let Scratch {
        residual,
        direction,
        product,
        ..
    } = scratch;
    // residual = b − A·x
    apply(factor, product);
    for (sum, &minus) in residual.iter_mut().zip(product.iter()) {
        *sum = -minus;
    }
    for (&column, &value) in columns.iter().zip(values) {
        if value > 0.0 {
            let confidence = 1.0 + implicit.alpha * f64::from(value);
            axpy(confidence, other_row(problem, column), residual);
        }
    }
    direction.copy_from_slice(residual);
    let mut residual_squared = dot(residual, residual);
    for _ in 0..CONJUGATE_GRADIENT_STEPS {
        if residual_squared < RESIDUAL_SQUARED_MIN {
            break;
        }
        apply(direction, product);
        let step = residual_squared / dot(direction, product);
        axpy(step, direction, factor);
        axpy(-step, product, residual);
        let next_squared = dot(residual, residual);
        let keep = next_squared / residual_squared;
        for (d, &r) in direction.iter_mut().zip(residual.iter()) {
            *d = r + keep * *d;
        }
        residual_squared = next_squared;
    }
}

/// `output = (YᵀY + λI + Σ (c_i − 1)·y_i·y_iᵀ)·vector` over the row's columns.
#[inline(always)]
fn apply_implicit(
    problem: &Problem<'_>,
    implicit: Implicit<'_>,
    columns: &[u32],
    values: &[f32],
    vector: &[f64],
    output: &mut [f64],
) {
    for (sum, gram_row) in output
        .iter_mut()
        .zip(implicit.gram.chunks_exact(problem.rank))
    {
        *sum = dot(gram_row, vector);
    }
    axpy(problem.regularization, vector, output);
    for (&column, &value) in columns.iter().zip(values) {
        let extra_confidence = implicit.alpha * f64::from(value.abs());
        let y = other_row(problem, column);
        axpy(extra_confidence * dot(y, vector), y, output);
    }
}

/// The exact implicit solve by Cholesky, for fold-in where one row is solved once and no
/// previous factor exists to start from.
pub(super) fn solve_implicit_row_exactly(
    problem: &Problem<'_>,
    implicit: Implicit<'_>,
    columns: &[u32],
    values: &[f32],
    scratch: &mut Scratch,
    factor: &mut [f64],
) {
    if columns.is_empty() {
        factor.fill(0.0);
        return;
    }
    let rank = problem.rank;
    let weights: Vec<f64> = values
        .iter()
        .map(|value| (implicit.alpha * f64::from(value.abs())).sqrt())
        .collect();
    gather(
        problem.other,
        rank,
        columns,
        Some(&weights),
        &mut scratch.gathered,
    );
    let rhs = &mut scratch.rhs;
    rhs.fill(0.0);
    for (&column, &value) in columns.iter().zip(values) {
        if value > 0.0 {
            let confidence = 1.0 + implicit.alpha * f64::from(value);
            axpy(confidence, other_row(problem, column), rhs);
        }
    }
    let gram = MatRef::from_row_major_slice(implicit.gram, rank, rank);
    solve_normal_equations(rank, Some(gram), problem.regularization, scratch, factor);
}

/// Solves `(base + GᵀG + ridge·I) x = rhs`, with `G` the gathered rows and `rhs` already in
/// the scratch. Only the lower triangle of the normal matrix is formed and read. A normal
/// matrix that is not positive definite (possible only without regularisation) is retried
/// with a growing ridge; if even that fails the factor is zero.
fn solve_normal_equations(
    rank: usize,
    base: Option<MatRef<'_, f64>>,
    ridge: f64,
    scratch: &mut Scratch,
    factor: &mut [f64],
) {
    let gathered_rows = scratch.gathered.len() / rank;
    let gathered = MatRef::from_column_major_slice(&scratch.gathered, rank, gathered_rows);
    let stack = MemStack::new(&mut scratch.stack);
    for extra_ridge in [0.0, 1e-10, 1e-6, 1e-2] {
        let mut normal = scratch.normal.as_mut();
        let accumulate = match base {
            Some(base) => {
                normal.copy_from(base);
                Accum::Add
            }
            None => Accum::Replace,
        };
        triangular::matmul(
            normal.rb_mut(),
            BlockStructure::TriangularLower,
            accumulate,
            gathered,
            BlockStructure::Rectangular,
            gathered.transpose(),
            BlockStructure::Rectangular,
            1.0,
            Par::Seq,
        );
        let diagonal_max = (0..rank).map(|i| normal[(i, i)]).fold(0.0, f64::max);
        let shift = ridge + extra_ridge * diagonal_max.max(f64::MIN_POSITIVE);
        for i in 0..rank {
            normal[(i, i)] += shift;
        }
        if cholesky_solve(normal, &scratch.rhs, factor, stack) {
            return;
        }
    }
    factor.fill(0.0);
}

/// Factors `normal` in place and solves for `rhs` into `factor`; false if `normal` is not
/// positive definite. `rhs` is left untouched so that a retry can use it.
fn cholesky_solve(
    mut normal: MatMut<'_, f64>,
    rhs: &[f64],
    factor: &mut [f64],
    stack: &mut MemStack,
) -> bool {
    let factored = llt::factor::cholesky_in_place(
        normal.rb_mut(),
        Default::default(),
        Par::Seq,
        stack,
        Default::default(),
    );
    if factored.is_err() {
        return false;
    }
    let rank = factor.len();
    factor.copy_from_slice(rhs);
    let solution = MatMut::from_column_major_slice_mut(factor, rank, 1);
    llt::solve::solve_in_place(normal.rb(), solution, Par::Seq, stack);
    factor.iter().all(|value| value.is_finite())
}

/// Copies the rows of `other` named by `columns` into `gathered`, each scaled by its weight if
/// given. Row-major `n × rank` is column-major `rank × n`, which is how the caller reads it.
fn gather(
    other: &[f64],
    rank: usize,
    columns: &[u32],
    weights: Option<&[f64]>,
    gathered: &mut Vec<f64>,
) {
    gathered.clear();
    for (position, &column) in columns.iter().enumerate() {
        let row = &other[column as usize * rank..][..rank];
        match weights {
            None => gathered.extend_from_slice(row),
            Some(weights) => gathered.extend(row.iter().map(|y| y * weights[position])),
        }
    }
}

/// `YᵀY` of row-major `rows × rank` factors, as a row-major `rank × rank` matrix.
pub(super) fn gram(factors: &[f64], rank: usize) -> Vec<f64> {
    let rows = factors.len() / rank;
    let transposed = MatRef::from_column_major_slice(factors, rank, rows);
    let mut gram = Mat::<f64>::zeros(rank, rank);
    faer::linalg::matmul::matmul(
        gram.as_mut(),
        Accum::Replace,
        transposed,
        transposed.transpose(),
        1.0,
        Par::Seq,
    );
    let mut output = Vec::with_capacity(rank * rank);
    for i in 0..rank {
        output.extend((0..rank).map(|j| gram[(i, j)]));
    }
    output
}

fn other_row<'a>(problem: &Problem<'a>, column: u32) -> &'a [f64] {
    &problem.other[column as usize * problem.rank..][..problem.rank]
}

/// `left · right`. Eight independent partial sums: a single running sum is one long chain of
/// dependent additions (the compiler may not reorder floating-point adds), which made the
/// implicit solver's matrix–vector products several times slower. The order of the additions
/// is fixed, so results stay deterministic.
#[inline(always)]
pub(super) fn dot(left: &[f64], right: &[f64]) -> f64 {
    let length = left.len().min(right.len());
    let (left, right) = (&left[..length], &right[..length]);
    let left_chunks = left.chunks_exact(8);
    let right_chunks = right.chunks_exact(8);
    let tail: f64 = left_chunks
        .remainder()
        .iter()
        .zip(right_chunks.remainder())
        .map(|(l, r)| l * r)
        .sum();
    let mut partial = [0.0f64; 8];
    for (l, r) in left_chunks.zip(right_chunks) {
        for lane in 0..8 {
            partial[lane] += l[lane] * r[lane];
        }
    }
    ((partial[0] + partial[4]) + (partial[1] + partial[5]))
        + ((partial[2] + partial[6]) + (partial[3] + partial[7]))
        + tail
}

#[inline(always)]
fn axpy(scale: f64, x: &[f64], y: &mut [f64]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += scale * x;
    }
}

#[cfg(test)]
mod vector_width_tests {
    use super::*;

    /// The AVX2 build of the implicit solve gives bit-identical factors to the portable one, so
    /// a model is the same whichever CPU trained it.
    #[test]
    fn implicit_solve_is_identical_whatever_the_vector_width() {
        let rank = 13;
        let rows = 40;
        let other: Vec<f64> = (0..rows * rank)
            .map(|i| ((i * 7919 % 1000) as f64 / 1000.0) - 0.5)
            .collect();
        let mut gram = vec![0.0; rank * rank];
        for row in other.chunks_exact(rank) {
            for a in 0..rank {
                for b in 0..rank {
                    gram[a * rank + b] += row[a] * row[b];
                }
            }
        }
        let implicit = Implicit {
            alpha: 3.0,
            gram: &gram,
        };
        let problem = Problem {
            rank,
            regularization: 0.05,
            implicit: Some(implicit),
            other: &other,
        };
        let columns: Vec<u32> = (0..rows as u32).step_by(3).collect();
        let values: Vec<f32> = columns.iter().map(|c| 1.0 + (*c % 4) as f32).collect();
        let start: Vec<f64> = (0..rank).map(|i| 0.01 * i as f64).collect();
        let mut portable = start.clone();
        solve_implicit_row_portable(
            &problem,
            implicit,
            &columns,
            &values,
            &mut Scratch::new(rank),
            &mut portable,
        );
        let mut dispatched = start;
        solve_implicit_row(
            &problem,
            implicit,
            &columns,
            &values,
            &mut Scratch::new(rank),
            &mut dispatched,
        );
        assert!(portable.iter().any(|v| *v != 0.0));
        assert_eq!(
            portable.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            dispatched.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}

//! Matrix factorisation by alternating least squares (ALS), for explicit ratings and for
//! implicit feedback.
//!
//! This module owns the numerical side of Freshet's recommender: it turns ratings with dense
//! user and item indices into user and item factors, and answers predictions, top-k
//! recommendations and fold-in from them. It knows nothing about SQL, tables, identifiers or
//! persistence; the model statements map identifiers to indices and store [`AlsModel`]s. It
//! logs nothing: progress goes to the caller's callback.
//!
//! # Algorithms
//!
//! - Explicit ratings: ALS with weighted-λ regularisation (ALS-WR, as Spark MLlib does). With
//!   the item factors fixed, user `u` with `n_u` ratings solves
//!   `(Y_uᵀ Y_u + λ·n_u·I) x_u = Y_uᵀ r_u` by Cholesky; then the items likewise.
//! - Implicit feedback (Hu, Koren, Volinsky): every (user, item) pair counts, with preference
//!   `p = 1` where the value is positive and 0 elsewhere, and confidence `c = 1 + α·|r|`
//!   where there is a value and 1 elsewhere. User `u` solves
//!   `(YᵀY + Yᵀ(C_u − I)Y + λI) x_u = Yᵀ C_u p_u` with `YᵀY` computed once per half-iteration
//!   and [`CONJUGATE_GRADIENT_STEPS`] conjugate-gradient steps started from the previous
//!   factor.
//!
//! Users and items without ratings get zero factors, so they predict 0. Training is
//! deterministic for a seed, whatever the number of threads: each row's solve reads only the
//! other side's factors and its own previous value.

mod data;
mod solve;
mod top;

#[cfg(test)]
mod tests;

use std::num::NonZeroUsize;
use std::time::Instant;

use data::{merge_duplicates, CompressedRows, Interactions};
pub use solve::CONJUGATE_GRADIENT_STEPS;
use solve::{Implicit, Problem, Scratch};

/// Largest accepted rank.
pub const RANK_MAX: usize = 1024;
/// Largest accepted number of iterations.
pub const ITERATIONS_MAX: usize = 1000;
/// Largest number of factor values (rows × rank) on either side: 2²⁸ values are 1 GiB in the
/// model and twice that while training.
pub const FACTOR_VALUES_MAX: usize = 1 << 28;
/// Most threads training uses, whatever it is asked for.
pub const THREADS_MAX: usize = 256;

/// Training parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlsParams {
    /// Number of latent factors, 1 to [`RANK_MAX`].
    pub rank: usize,
    /// Number of alternations (users then items), 1 to [`ITERATIONS_MAX`].
    pub iterations: usize,
    /// λ, finite and not negative. Explicit mode scales it by each row's number of ratings.
    pub regularization: f64,
    /// Implicit feedback (values are counts or strengths) instead of explicit ratings.
    pub implicit: bool,
    /// α, the confidence gained per unit of implicit feedback; finite and not negative.
    pub alpha: f64,
    /// Seed of the initial factors.
    pub seed: u64,
}

impl Default for AlsParams {
    fn default() -> Self {
        AlsParams {
            rank: 10,
            iterations: 10,
            regularization: 0.1,
            implicit: false,
            alpha: 1.0,
            seed: 42,
        }
    }
}

impl AlsParams {
    /// Checks every parameter against its documented range.
    pub fn validate(&self) -> Result<(), AlsError> {
        let invalid = |name, value: String, expected: String| {
            Err(AlsError::InvalidParameter {
                name,
                value,
                expected,
            })
        };
        if !(1..=RANK_MAX).contains(&self.rank) {
            let expected = format!("an integer from 1 to {RANK_MAX}");
            return invalid("rank", self.rank.to_string(), expected);
        }
        if !(1..=ITERATIONS_MAX).contains(&self.iterations) {
            let expected = format!("an integer from 1 to {ITERATIONS_MAX}");
            return invalid("iterations", self.iterations.to_string(), expected);
        }
        let not_negative = || "a finite number, 0 or more".to_string();
        if !(self.regularization.is_finite() && self.regularization >= 0.0) {
            let value = self.regularization.to_string();
            return invalid("regularization", value, not_negative());
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return invalid("alpha", self.alpha.to_string(), not_negative());
        }
        Ok(())
    }
}

/// Ratings with dense indices: `users[i]` in `0..n_users`, `items[i]` in `0..n_items`,
/// `values[i]` finite. The three columns have the same length.
///
/// A (user, item) pair may appear more than once. Explicit ratings keep the last occurrence
/// (a re-rating replaces the earlier one); implicit feedback adds the occurrences up (three
/// plays count as three). Fold-in follows the same rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ratings {
    pub n_users: usize,
    pub n_items: usize,
    pub users: Vec<u32>,
    pub items: Vec<u32>,
    pub values: Vec<f32>,
}

/// Reported after each iteration of [`train`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IterationReport {
    /// 1 for the first iteration.
    pub iteration: usize,
    /// Explicit mode: RMSE on the training ratings (duplicates merged). Implicit mode: the
    /// objective — confidence-weighted squared error over every (user, item) pair plus the
    /// regularisation term — divided by the sum of all confidences.
    pub rmse: f64,
    /// Wall-clock seconds the iteration took, its loss computation included.
    pub seconds: f64,
}

/// Why training could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlsError {
    #[error("invalid ALS parameter {name} = {value}: expected {expected}")]
    InvalidParameter {
        name: &'static str,
        value: String,
        expected: String,
    },
    #[error("no ratings to train on")]
    NoRatings,
    #[error("ratings columns differ in length: {users} users, {items} items, {values} values")]
    LengthMismatch {
        users: usize,
        items: usize,
        values: usize,
    },
    #[error("rating {position} refers to {side} {index}, but there are only {count} {side}s")]
    IndexOutOfRange {
        position: usize,
        side: &'static str,
        index: u32,
        count: usize,
    },
    #[error("rating {position} has the non-finite value {value}")]
    NonFiniteValue { position: usize, value: f32 },
    #[error(
        "{count} {side}s at rank {rank} exceed the limit of {} factor values",
        FACTOR_VALUES_MAX
    )]
    TooLarge {
        side: &'static str,
        count: usize,
        rank: usize,
    },
}

/// Trained factors, row-major `f32`: user `u`'s factor is
/// `user_factors[u * rank..(u + 1) * rank]`, likewise for items.
#[derive(Debug, Clone)]
pub struct AlsModel {
    pub rank: usize,
    pub n_users: usize,
    pub n_items: usize,
    pub user_factors: Vec<f32>,
    pub item_factors: Vec<f32>,
}

/// Trains a model on as many threads as the machine offers. See [`train_with_threads`].
pub fn train(
    ratings: &Ratings,
    params: &AlsParams,
    progress: &mut dyn FnMut(&IterationReport),
) -> Result<AlsModel, AlsError> {
    let threads = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    train_with_threads(ratings, params, threads, progress)
}

/// Trains a model on `threads` threads (at least 1, at most [`THREADS_MAX`]), calling
/// `progress` after every iteration. The result does not depend on `threads`.
///
/// # Errors
/// Invalid parameters, no ratings, columns of different lengths, an index out of range, a
/// non-finite value, or more factor values than [`FACTOR_VALUES_MAX`].
pub fn train_with_threads(
    ratings: &Ratings,
    params: &AlsParams,
    threads: usize,
    progress: &mut dyn FnMut(&IterationReport),
) -> Result<AlsModel, AlsError> {
    params.validate()?;
    let rank = params.rank;
    for (side, count) in [("user", ratings.n_users), ("item", ratings.n_items)] {
        if count.saturating_mul(rank) > FACTOR_VALUES_MAX {
            return Err(AlsError::TooLarge { side, count, rank });
        }
    }
    let interactions = Interactions::build(ratings, params.implicit)?;
    let threads = threads.clamp(1, THREADS_MAX);
    let mut users = initial_factors(&interactions.by_user, rank, params.seed, 1);
    let mut items = initial_factors(&interactions.by_item, rank, params.seed, 2);
    for iteration in 1..=params.iterations {
        let started = Instant::now();
        half_iteration(&mut users, &interactions.by_user, &items, params, threads);
        half_iteration(&mut items, &interactions.by_item, &users, params, threads);
        let rmse = if params.implicit {
            implicit_loss(&interactions, &users, &items, params, threads)
        } else {
            training_rmse(&interactions.by_user, &users, &items, rank, threads)
        };
        let seconds = started.elapsed().as_secs_f64();
        progress(&IterationReport {
            iteration,
            rmse,
            seconds,
        });
    }
    Ok(AlsModel {
        rank,
        n_users: ratings.n_users,
        n_items: ratings.n_items,
        user_factors: users.iter().map(|&value| value as f32).collect(),
        item_factors: items.iter().map(|&value| value as f32).collect(),
    })
}

/// Solves one side (`factors`, whose rows are `rows`) against the other side's factors.
fn half_iteration(
    factors: &mut [f64],
    rows: &CompressedRows,
    other: &[f64],
    params: &AlsParams,
    threads: usize,
) {
    let gram;
    let implicit = if params.implicit {
        gram = solve::gram(other, params.rank);
        Some(Implicit {
            alpha: params.alpha,
            gram: &gram,
        })
    } else {
        None
    };
    let problem = Problem {
        rank: params.rank,
        regularization: params.regularization,
        implicit,
        other,
    };
    solve::solve_side(factors, rows, problem, threads);
}

/// Random unit-length rows (the direction is what matters), zero for rows without entries.
/// Each side draws from its own SplitMix64 stream, so the start depends on the seed only.
fn initial_factors(rows: &CompressedRows, rank: usize, seed: u64, stream: u64) -> Vec<f64> {
    let mut state = seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F);
    let mut factors = vec![0.0; rows.row_count() * rank];
    for (row, factor) in factors.chunks_exact_mut(rank).enumerate() {
        for value in factor.iter_mut() {
            // The top 53 bits as a uniform number in [-1, 1).
            *value = (split_mix_64(&mut state) >> 11) as f64 / (1u64 << 52) as f64 - 1.0;
        }
        let norm = solve::dot(factor, factor).sqrt();
        let has_entries = !rows.row(row).0.is_empty();
        for value in factor.iter_mut() {
            *value = if has_entries && norm > 0.0 {
                *value / norm
            } else {
                0.0
            };
        }
    }
    factors
}

fn split_mix_64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Root mean squared error of the factors on the (merged) training ratings.
fn training_rmse(
    by_user: &CompressedRows,
    users: &[f64],
    items: &[f64],
    rank: usize,
    threads: usize,
) -> f64 {
    let squared_errors = per_row_sums(by_user.row_count(), threads, |user| {
        let (columns, values) = by_user.row(user);
        let x = &users[user * rank..][..rank];
        columns
            .iter()
            .zip(values)
            .map(|(&item, &value)| {
                let predicted = solve::dot(x, &items[item as usize * rank..][..rank]);
                (predicted - f64::from(value)).powi(2)
            })
            .sum()
    });
    (squared_errors / by_user.entry_count() as f64).sqrt()
}

/// The implicit objective over all (user, item) pairs divided by the sum of confidences. The
/// pairs without a value contribute `x_uᵀ(YᵀY)x_u` in total, so only the rated pairs are
/// visited.
fn implicit_loss(
    interactions: &Interactions,
    users: &[f64],
    items: &[f64],
    params: &AlsParams,
    threads: usize,
) -> f64 {
    let (rank, alpha) = (params.rank, params.alpha);
    let gram = solve::gram(items, rank);
    let by_user = &interactions.by_user;
    let weighted_errors = per_row_sums(by_user.row_count(), threads, |user| {
        let x = &users[user * rank..][..rank];
        let everything_zero: f64 = gram
            .chunks_exact(rank)
            .zip(x)
            .map(|(gram_row, &x_i)| x_i * solve::dot(gram_row, x))
            .sum();
        let (columns, values) = by_user.row(user);
        let correction: f64 = columns
            .iter()
            .zip(values)
            .map(|(&item, &value)| {
                let score = solve::dot(x, &items[item as usize * rank..][..rank]);
                let confidence = 1.0 + alpha * f64::from(value.abs());
                let preference = if value > 0.0 { 1.0 } else { 0.0 };
                confidence * (preference - score).powi(2) - score * score
            })
            .sum();
        everything_zero + correction
    });
    let penalty = params.regularization * (solve::dot(users, users) + solve::dot(items, items));
    let extra_confidence: f64 = by_user
        .values()
        .iter()
        .map(|value| alpha * f64::from(value.abs()))
        .sum();
    let pairs = by_user.row_count() as f64 * interactions.by_item.row_count() as f64;
    (weighted_errors + penalty) / (pairs + extra_confidence)
}

/// `Σ row_sum(row)` over `0..rows`, computed on `threads` threads and added up in row order so
/// that the total does not depend on the number of threads.
fn per_row_sums(rows: usize, threads: usize, row_sum: impl Fn(usize) -> f64 + Sync) -> f64 {
    let mut sums = vec![0.0; rows];
    solve::for_each_row(&mut sums, 1, threads, |row, sum, _| sum[0] = row_sum(row));
    sums.iter().sum()
}

impl AlsModel {
    /// User `user`'s factor, `None` if the model has no such user.
    pub fn user_factor(&self, user: u32) -> Option<&[f32]> {
        factor_row(&self.user_factors, self.rank, user)
    }

    /// Item `item`'s factor, `None` if the model has no such item.
    pub fn item_factor(&self, item: u32) -> Option<&[f32]> {
        factor_row(&self.item_factors, self.rank, item)
    }

    /// The predicted rating (explicit) or preference score (implicit); 0 for a user or item
    /// that had no ratings or that the model does not know.
    pub fn predict(&self, user: u32, item: u32) -> f32 {
        match (self.user_factor(user), self.item_factor(item)) {
            (Some(x), Some(y)) => dot_f32(x, y),
            _ => 0.0,
        }
    }

    /// The `k` items with the highest scores for `user`, best first, ties by lower index,
    /// skipping the items in `exclude` (ascending item indices; unsorted input is sorted
    /// first). Empty for a user the model does not know.
    pub fn recommend(&self, user: u32, k: usize, exclude: &[u32]) -> Vec<(u32, f32)> {
        match self.user_factor(user) {
            Some(factor) => self.recommend_for_vector(factor, k, exclude),
            None => Vec::new(),
        }
    }

    /// Like [`AlsModel::recommend`], for a user factor from elsewhere, e.g.
    /// [`AlsModel::fold_in_user`].
    ///
    /// # Panics
    /// If `factor` does not have `rank` values.
    pub fn recommend_for_vector(
        &self,
        factor: &[f32],
        k: usize,
        exclude: &[u32],
    ) -> Vec<(u32, f32)> {
        assert_eq!(factor.len(), self.rank, "a user factor has `rank` values");
        let sorted;
        let exclude = if exclude.is_sorted() {
            exclude
        } else {
            let mut copy = exclude.to_vec();
            copy.sort_unstable();
            sorted = copy;
            &sorted
        };
        top::best_rows(&self.item_factors, factor, k, exclude)
    }

    /// The `k` users with the highest scores for `item`, best first, ties by lower index.
    /// Empty for an item the model does not know.
    pub fn recommend_users(&self, item: u32, k: usize) -> Vec<(u32, f32)> {
        let Some(y) = self.item_factor(item) else {
            return Vec::new();
        };
        top::best_rows(&self.user_factors, y, k, &[])
    }

    /// Fold-in: the factor of a user who rated `items` with `values`, solved against the
    /// fixed item factors by the training rules of `params` (explicit or implicit,
    /// regularisation, α, merging of duplicates). The rank is the model's; `params.rank`,
    /// `iterations` and `seed` are not used. Implicit fold-in is the exact solution (Cholesky)
    /// rather than training's few conjugate-gradient steps. Items the model does not know and
    /// non-finite values are ignored; with nothing left the factor is zero.
    ///
    /// # Panics
    /// If `items` and `values` differ in length.
    pub fn fold_in_user(&self, items: &[u32], values: &[f32], params: &AlsParams) -> Vec<f32> {
        assert_eq!(items.len(), values.len(), "one value per item");
        let known =
            |&(&item, value): &(&u32, &f32)| (item as usize) < self.n_items && value.is_finite();
        let (items, values): (Vec<u32>, Vec<f32>) = items
            .iter()
            .zip(values)
            .filter(known)
            .map(|(&i, &v)| (i, v))
            .unzip();
        let (items, values) = merge_duplicates(&items, &values, params.implicit);
        let rank = self.rank;
        let mut factor = vec![0.0; rank];
        let mut scratch = Scratch::new(rank);
        if params.implicit {
            let other: Vec<f64> = self.item_factors.iter().map(|&v| f64::from(v)).collect();
            let gram = solve::gram(&other, rank);
            let implicit = Implicit {
                alpha: params.alpha,
                gram: &gram,
            };
            let problem = self.fold_in_problem(params, Some(implicit), &other);
            solve::solve_implicit_row_exactly(
                &problem,
                implicit,
                &items,
                &values,
                &mut scratch,
                &mut factor,
            );
        } else {
            // Only the rated items matter: gather them and renumber them 0..n.
            let mut other = Vec::with_capacity(items.len() * rank);
            for &item in &items {
                let y = self.item_factor(item).expect("unknown items were dropped");
                other.extend(y.iter().map(|&v| f64::from(v)));
            }
            let renumbered: Vec<u32> = (0..items.len() as u32).collect();
            let problem = self.fold_in_problem(params, None, &other);
            solve::solve_explicit_row(&problem, &renumbered, &values, &mut scratch, &mut factor);
        }
        factor.iter().map(|&value| value as f32).collect()
    }

    fn fold_in_problem<'a>(
        &self,
        params: &AlsParams,
        implicit: Option<Implicit<'a>>,
        other: &'a [f64],
    ) -> Problem<'a> {
        Problem {
            rank: self.rank,
            regularization: params.regularization,
            implicit,
            other,
        }
    }

    /// Root mean squared error of [`AlsModel::predict`] on `ratings`, every entry counted
    /// (duplicates are not merged); NaN when there are none.
    pub fn rmse(&self, ratings: &Ratings) -> f64 {
        let entries = ratings
            .users
            .iter()
            .zip(&ratings.items)
            .zip(&ratings.values);
        let (mut squared_errors, mut count) = (0.0, 0usize);
        for ((&user, &item), &value) in entries {
            squared_errors += (f64::from(self.predict(user, item)) - f64::from(value)).powi(2);
            count += 1;
        }
        (squared_errors / count as f64).sqrt()
    }
}

fn factor_row(factors: &[f32], rank: usize, row: u32) -> Option<&[f32]> {
    let start = (row as usize).checked_mul(rank)?;
    factors.get(start..start.checked_add(rank)?)
}

fn dot_f32(left: &[f32], right: &[f32]) -> f32 {
    top::dot(left, right)
}

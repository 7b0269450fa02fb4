use std::collections::HashSet;
use std::time::Instant;

use super::data::Interactions;
use super::solve::{self, Implicit, Problem};
use super::*;

/// A test-side random source (SplitMix64), independent of the solver's initialisation.
struct Random(u64);

impl Random {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }

    /// Standard normal by Box–Muller.
    fn gaussian(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// Solves a small dense system by Gaussian elimination with partial pivoting.
fn gaussian_elimination(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for column in 0..n {
        let pivot = (column..n)
            .max_by(|&i, &j| a[i][column].abs().total_cmp(&a[j][column].abs()))
            .unwrap();
        a.swap(column, pivot);
        b.swap(column, pivot);
        for row in column + 1..n {
            let factor = a[row][column] / a[column][column];
            let pivot_row = a[column].clone();
            for (value, pivot_value) in a[row].iter_mut().zip(&pivot_row).skip(column) {
                *value -= factor * pivot_value;
            }
            b[row] -= factor * b[column];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let rest: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - rest) / a[row][row];
    }
    x
}

fn assert_close(actual: &[f64], expected: &[f64], tolerance: f64) {
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(expected) {
        assert!((a - e).abs() <= tolerance, "{actual:?} != {expected:?}");
    }
}

fn ratings(n_users: usize, n_items: usize, triples: &[(u32, u32, f32)]) -> Ratings {
    Ratings {
        n_users,
        n_items,
        users: triples.iter().map(|t| t.0).collect(),
        items: triples.iter().map(|t| t.1).collect(),
        values: triples.iter().map(|t| t.2).collect(),
    }
}

/// Fixed item factors (rank 3) for the hand-checked solves.
const ITEMS: [[f64; 3]; 4] = [
    [1.0, 0.5, -0.2],
    [0.3, -1.0, 0.8],
    [-0.7, 0.4, 1.1],
    [0.9, 0.9, 0.1],
];

/// `(Σ y yᵀ + λ n I) x = Σ r y` over the rated items, built and solved without the solver.
fn explicit_expected(rated: &[(usize, f64)], lambda: f64) -> Vec<f64> {
    let mut a = vec![vec![0.0; 3]; 3];
    let mut b = vec![0.0; 3];
    for &(item, rating) in rated {
        let y = ITEMS[item];
        for i in 0..3 {
            for j in 0..3 {
                a[i][j] += y[i] * y[j];
            }
            b[i] += rating * y[i];
        }
    }
    for (i, row) in a.iter_mut().enumerate() {
        row[i] += lambda * rated.len() as f64;
    }
    gaussian_elimination(a, b)
}

#[test]
fn explicit_user_solve_is_the_least_squares_solution() {
    let lambda = 0.1;
    // User 0 rates three items, user 1 two, user 2 nothing. Solving user 1 after user 0 in the
    // same scratch also checks that nothing of the previous row leaks into the next.
    let triples = [
        (0, 0, 4.0),
        (0, 1, 1.0),
        (0, 3, 5.0),
        (1, 2, 2.0),
        (1, 1, 3.0),
    ];
    let interactions = Interactions::build(&ratings(3, 4, &triples), false).unwrap();
    let other: Vec<f64> = ITEMS.iter().flatten().copied().collect();
    let problem = Problem {
        rank: 3,
        regularization: lambda,
        implicit: None,
        other: &other,
    };
    let mut users = vec![7.0; 9];
    solve::solve_side(&mut users, &interactions.by_user, problem, 1);

    let user_0 = explicit_expected(&[(0, 4.0), (1, 1.0), (3, 5.0)], lambda);
    let user_1 = explicit_expected(&[(2, 2.0), (1, 3.0)], lambda);
    assert_close(&users[0..3], &user_0, 1e-9);
    assert_close(&users[3..6], &user_1, 1e-9);
    assert_eq!(&users[6..9], &[0.0; 3]);

    // Fold-in runs the same solve through the public API (in f32).
    let model = AlsModel {
        rank: 3,
        n_users: 0,
        n_items: 4,
        user_factors: Vec::new(),
        item_factors: other.iter().map(|&v| v as f32).collect(),
    };
    let params = AlsParams {
        regularization: lambda,
        ..AlsParams::default()
    };
    let folded = model.fold_in_user(&[3, 0, 1], &[5.0, 4.0, 1.0], &params);
    let folded: Vec<f64> = folded.iter().map(|&v| f64::from(v)).collect();
    assert_close(&folded, &user_0, 1e-4);
}

/// `(YᵀY + Σ α|r| y yᵀ + λI) x = Σ_{r>0} (1 + α r) y`, built and solved without the solver.
fn implicit_expected(
    items: &[[f64; 3]],
    rated: &[(usize, f64)],
    lambda: f64,
    alpha: f64,
) -> Vec<f64> {
    let rank = items[0].len();
    let mut a = vec![vec![0.0; rank]; rank];
    let mut b = vec![0.0; rank];
    for y in items {
        for i in 0..rank {
            for j in 0..rank {
                a[i][j] += y[i] * y[j];
            }
        }
    }
    for &(item, value) in rated {
        let y = items[item];
        for i in 0..rank {
            for j in 0..rank {
                a[i][j] += alpha * value.abs() * y[i] * y[j];
            }
            if value > 0.0 {
                b[i] += (1.0 + alpha * value) * y[i];
            }
        }
    }
    for (i, row) in a.iter_mut().enumerate() {
        row[i] += lambda;
    }
    gaussian_elimination(a, b)
}

#[test]
fn implicit_user_solve_is_the_weighted_least_squares_solution() {
    let (lambda, alpha) = (0.5, 2.0);
    // Rank 3 and three conjugate-gradient steps: exact up to rounding from any start.
    const { assert!(CONJUGATE_GRADIENT_STEPS >= 3) };
    let triples = [(0, 0, 3.0), (0, 2, 1.0), (0, 3, -1.0), (1, 1, 2.0)];
    let interactions = Interactions::build(&ratings(2, 4, &triples), true).unwrap();
    let other: Vec<f64> = ITEMS.iter().flatten().copied().collect();
    let gram = solve::gram(&other, 3);
    let implicit = Implicit { alpha, gram: &gram };
    let problem = Problem {
        rank: 3,
        regularization: lambda,
        implicit: Some(implicit),
        other: &other,
    };
    let mut users = vec![0.3, -0.2, 0.9, 1.0, 1.0, 1.0];
    solve::solve_side(&mut users, &interactions.by_user, problem, 1);

    let user_0 = implicit_expected(&ITEMS, &[(0, 3.0), (2, 1.0), (3, -1.0)], lambda, alpha);
    let user_1 = implicit_expected(&ITEMS, &[(1, 2.0)], lambda, alpha);
    assert_close(&users[0..3], &user_0, 1e-9);
    assert_close(&users[3..6], &user_1, 1e-9);

    let model = AlsModel {
        rank: 3,
        n_users: 0,
        n_items: 4,
        user_factors: Vec::new(),
        item_factors: other.iter().map(|&v| v as f32).collect(),
    };
    let params = AlsParams {
        regularization: lambda,
        alpha,
        implicit: true,
        ..AlsParams::default()
    };
    // Duplicates add up: 2 + 1 plays of item 0 are the 3.0 above.
    let folded = model.fold_in_user(&[0, 2, 3, 0], &[2.0, 1.0, -1.0, 1.0], &params);
    let folded: Vec<f64> = folded.iter().map(|&v| f64::from(v)).collect();
    assert_close(&folded, &user_0, 1e-4);
}

#[test]
fn duplicated_pairs_keep_the_last_rating_or_add_up_feedback() {
    let triples = [(0, 1, 2.0), (1, 0, 1.0), (0, 1, 5.0), (0, 0, 3.0)];
    let explicit = Interactions::build(&ratings(2, 2, &triples), false).unwrap();
    assert_eq!(explicit.by_user.row(0), (&[0, 1][..], &[3.0, 5.0][..]));
    assert_eq!(explicit.by_item.row(1), (&[0][..], &[5.0][..]));
    assert_eq!(explicit.by_item.row(0), (&[0, 1][..], &[3.0, 1.0][..]));
    let implicit = Interactions::build(&ratings(2, 2, &triples), true).unwrap();
    assert_eq!(implicit.by_user.row(0), (&[0, 1][..], &[3.0, 7.0][..]));
}

/// Ratings `u·v + noise` with rank-5 Gaussian factors scaled so that `u·v` has variance 1.
struct LowRank {
    train: Ratings,
    test: Ratings,
    noise: f64,
}

fn low_rank_ratings(
    n_users: usize,
    n_items: usize,
    count: usize,
    noise: f64,
    seed: u64,
) -> LowRank {
    let rank = 5;
    let mut random = Random(seed);
    let scale = 1.0 / (rank as f64).sqrt().sqrt();
    let mut draw =
        |n: usize| -> Vec<f64> { (0..n * rank).map(|_| random.gaussian() * scale).collect() };
    let (users, items) = (draw(n_users), draw(n_items));
    let mut random = Random(seed ^ 0xDEAD_BEEF);
    let mut seen = HashSet::new();
    let mut train = ratings(n_users, n_items, &[]);
    let mut test = ratings(n_users, n_items, &[]);
    while seen.len() < count {
        let (user, item) = (random.below(n_users), random.below(n_items));
        if !seen.insert((user, item)) {
            continue;
        }
        let truth: f64 = (0..rank)
            .map(|j| users[user * rank + j] * items[item * rank + j])
            .sum();
        let value = (truth + noise * random.gaussian()) as f32;
        let split = if random.below(10) == 0 {
            &mut test
        } else {
            &mut train
        };
        split.users.push(user as u32);
        split.items.push(item as u32);
        split.values.push(value);
    }
    LowRank { train, test, noise }
}

#[test]
fn low_rank_ratings_are_recovered_to_the_noise_level() {
    let data = low_rank_ratings(1000, 1700, 100_000, 0.1, 7);
    let params = AlsParams {
        rank: 5,
        iterations: 15,
        regularization: 0.01,
        ..AlsParams::default()
    };
    let mut reports = Vec::new();
    let model = train(&data.train, &params, &mut |report| reports.push(*report)).unwrap();
    let held_out = model.rmse(&data.test);
    let mean = data.train.values.iter().map(|&v| f64::from(v)).sum::<f64>()
        / data.train.values.len() as f64;
    let baseline = (data
        .test
        .values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / data.test.values.len() as f64)
        .sqrt();
    assert!(held_out < 1.5 * data.noise, "held-out RMSE {held_out}");
    assert!(
        held_out < 0.25 * baseline,
        "held-out {held_out}, baseline {baseline}"
    );
    let iterations: Vec<usize> = reports.iter().map(|report| report.iteration).collect();
    assert_eq!(iterations, (1..=15).collect::<Vec<_>>());
    assert!(reports[14].rmse < reports[0].rmse, "{reports:?}");
    assert!((reports[14].rmse - model.rmse(&data.train)).abs() < 1e-3);
}

/// Users in clusters interacting mostly with their cluster's items; a fifth of each user's
/// interactions held out.
struct Clusters {
    train: Ratings,
    held_out: Vec<Vec<u32>>,
    trained: Vec<Vec<u32>>,
}

fn clustered_feedback(seed: u64) -> Clusters {
    let (clusters, n_users, n_items, per_user) = (10, 600, 500, 20);
    let items_per_cluster = n_items / clusters;
    let mut random = Random(seed);
    let mut train = ratings(n_users, n_items, &[]);
    let mut held_out = vec![Vec::new(); n_users];
    let mut trained = vec![Vec::new(); n_users];
    for user in 0..n_users {
        let cluster = user % clusters;
        let mut chosen = HashSet::new();
        while chosen.len() < per_user {
            let item = if random.below(10) < 9 {
                cluster * items_per_cluster + random.below(items_per_cluster)
            } else {
                random.below(n_items)
            };
            chosen.insert(item as u32);
        }
        let mut chosen: Vec<u32> = chosen.into_iter().collect();
        chosen.sort_unstable();
        for item in chosen {
            if random.below(5) == 0 {
                held_out[user].push(item);
                continue;
            }
            trained[user].push(item);
            train.users.push(user as u32);
            train.items.push(item);
            train.values.push(1.0 + random.below(5) as f32);
        }
    }
    Clusters {
        train,
        held_out,
        trained,
    }
}

#[test]
fn implicit_feedback_ranks_held_out_items_far_above_random() {
    let data = clustered_feedback(11);
    let params = AlsParams {
        rank: 10,
        iterations: 15,
        regularization: 0.1,
        implicit: true,
        alpha: 5.0,
        ..AlsParams::default()
    };
    let mut losses = Vec::new();
    let model = train(&data.train, &params, &mut |report| losses.push(report.rmse)).unwrap();
    assert!(losses.last().unwrap() < &losses[0], "{losses:?}");
    let (mut hits, mut random_hits) = (0.0, 0.0);
    for user in 0..data.train.n_users {
        let recommended = model.recommend(user as u32, 10, &data.trained[user]);
        assert_eq!(recommended.len(), 10);
        let held_out = &data.held_out[user];
        hits += recommended
            .iter()
            .filter(|(item, _)| held_out.contains(item))
            .count() as f64;
        let candidates = (data.train.n_items - data.trained[user].len()) as f64;
        random_hits += 10.0 * held_out.len() as f64 / candidates;
    }
    assert!(
        hits > 5.0 * random_hits,
        "{hits} hits, {random_hits} expected at random"
    );
}

fn factors_of(ratings: &Ratings, params: &AlsParams, threads: usize) -> AlsModel {
    train_with_threads(ratings, params, threads, &mut |_| {}).unwrap()
}

#[test]
fn factors_depend_on_the_seed_only_not_on_the_thread_count() {
    let data = low_rank_ratings(300, 200, 8000, 0.1, 3);
    for implicit in [false, true] {
        let params = AlsParams {
            rank: 6,
            iterations: 4,
            implicit,
            ..AlsParams::default()
        };
        let one = factors_of(&data.train, &params, 1);
        let three = factors_of(&data.train, &params, 3);
        let again = factors_of(&data.train, &params, 1);
        assert_eq!(one.user_factors, three.user_factors);
        assert_eq!(one.item_factors, three.item_factors);
        assert_eq!(one.user_factors, again.user_factors);
        let reseeded = factors_of(&data.train, &AlsParams { seed: 43, ..params }, 1);
        assert_ne!(one.item_factors, reseeded.item_factors);
    }
}

#[test]
fn fold_in_reproduces_a_trained_user() {
    let data = low_rank_ratings(300, 200, 12_000, 0.1, 5);
    for implicit in [false, true] {
        let params = AlsParams {
            rank: 5,
            iterations: 30,
            regularization: if implicit { 0.1 } else { 0.05 },
            implicit,
            alpha: 2.0,
            ..AlsParams::default()
        };
        // Implicit feedback is non-negative.
        let mut train_ratings = data.train.clone();
        if implicit {
            train_ratings.values.iter_mut().for_each(|v| *v = v.abs());
        }
        let model = factors_of(&train_ratings, &params, 2);
        for user in [0u32, 17, 123] {
            let (items, values): (Vec<u32>, Vec<f32>) = (0..train_ratings.users.len())
                .filter(|&i| train_ratings.users[i] == user)
                .map(|i| (train_ratings.items[i], train_ratings.values[i]))
                .unzip();
            let folded = model.fold_in_user(&items, &values, &params);
            let trained = model.user_factor(user).unwrap();
            let difference: f32 = folded
                .iter()
                .zip(trained)
                .map(|(f, t)| (f - t).powi(2))
                .sum();
            let norm: f32 = trained.iter().map(|t| t * t).sum();
            // Training's user factors were solved against item factors half an iteration
            // older than the model's, and in implicit mode by a few conjugate-gradient steps
            // rather than exactly, hence the wider margin there.
            let tolerance = if implicit { 0.05 } else { 0.01 };
            assert!(
                difference.sqrt() < tolerance * norm.sqrt(),
                "implicit {implicit}, user {user}: {folded:?} vs {trained:?}"
            );
        }
    }
}

#[test]
fn users_and_items_without_ratings_have_zero_factors() {
    let triples = [(0, 0, 4.0), (0, 2, 3.0), (2, 0, 5.0), (2, 2, 1.0)];
    for implicit in [false, true] {
        let params = AlsParams {
            rank: 2,
            implicit,
            ..AlsParams::default()
        };
        let model = factors_of(&ratings(4, 3, &triples), &params, 1);
        assert_eq!(model.user_factor(1), Some(&[0.0, 0.0][..]));
        assert_eq!(model.user_factor(3), Some(&[0.0, 0.0][..]));
        assert_eq!(model.item_factor(1), Some(&[0.0, 0.0][..]));
        assert_eq!(model.predict(1, 0), 0.0);
        assert_ne!(model.predict(0, 0), 0.0);
        // Unknown indices predict 0 and recommend nothing.
        assert_eq!(model.predict(9, 0), 0.0);
        assert!(model.recommend(9, 3, &[]).is_empty());
        assert!(model.recommend_users(9, 3).is_empty());
    }
}

/// Rank 1: the score of item `i` for a user with factor 1 is `item_factors[i]`.
fn rank_one_model() -> AlsModel {
    AlsModel {
        rank: 1,
        n_users: 3,
        n_items: 5,
        user_factors: vec![1.0, -1.0, 2.0],
        item_factors: vec![1.0, 3.0, 2.0, 3.0, 0.0],
    }
}

#[test]
fn recommendations_are_best_first_ties_by_lower_index_and_skip_excluded() {
    let model = rank_one_model();
    assert_eq!(
        model.recommend(0, 3, &[]),
        vec![(1, 3.0), (3, 3.0), (2, 2.0)]
    );
    assert_eq!(
        model.recommend(0, 3, &[1]),
        vec![(3, 3.0), (2, 2.0), (0, 1.0)]
    );
    assert_eq!(
        model.recommend(0, 3, &[3, 1, 3]),
        vec![(2, 2.0), (0, 1.0), (4, 0.0)]
    );
    assert_eq!(model.recommend(1, 2, &[]), vec![(4, -0.0), (0, -1.0)]);
    assert_eq!(model.recommend(0, 100, &[0, 1, 2, 3]), vec![(4, 0.0)]);
    assert!(model.recommend(0, 0, &[]).is_empty());
    assert_eq!(
        model.recommend_for_vector(&[-2.0], 1, &[4]),
        vec![(0, -2.0)]
    );
    assert_eq!(model.recommend_users(2, 2), vec![(2, 4.0), (0, 2.0)]);
    assert_eq!(model.predict(2, 3), 6.0);
}

/// What `recommend` returned before the SIMD scoring, computed independently: every row
/// scored by the sequential `Σ x[c]·y[c]` from −0 (`Iterator::sum`), excluded rows dropped,
/// sorted by score (`total_cmp`) descending then index ascending, the first `k`.
fn reference_best_rows(rows: &[f32], vector: &[f32], k: usize, exclude: &[u32]) -> Vec<(u32, f32)> {
    let mut scored: Vec<(u32, f32)> = rows
        .chunks_exact(vector.len())
        .enumerate()
        .filter(|(row, _)| !exclude.contains(&(*row as u32)))
        .map(|(row, y)| (row as u32, vector.iter().zip(y).map(|(a, b)| a * b).sum()))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

/// Scores compared bit for bit: the SIMD path adds in the scalar order, so the tolerance is 0.
fn assert_same_rows(actual: &[(u32, f32)], expected: &[(u32, f32)], what: &str) {
    let bits = |rows: &[(u32, f32)]| -> Vec<(u32, u32)> {
        rows.iter().map(|&(i, s)| (i, s.to_bits())).collect()
    };
    assert_eq!(bits(actual), bits(expected), "{what}");
}

#[test]
fn simd_scoring_and_selection_equal_the_scalar_reference_bit_for_bit() {
    let mut random = Random(11);
    // Ranks around the 8-wide blocks, row counts around the 8-row blocks.
    for rank in [1, 3, 7, 8, 9, 16, 31, 32, 33, 64] {
        for n_rows in [0, 1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 1000] {
            let mut rows: Vec<f32> = (0..n_rows * rank)
                .map(|_| random.gaussian() as f32)
                .collect();
            // Exact ties: some rows copy an earlier one, and some are all zero (score ±0).
            for row in 1..n_rows {
                match random.below(10) {
                    0 => {
                        let from = random.below(row);
                        rows.copy_within(from * rank..(from + 1) * rank, row * rank);
                    }
                    1 => rows[row * rank..(row + 1) * rank].fill(0.0),
                    _ => {}
                }
            }
            let vector: Vec<f32> = (0..rank).map(|_| random.gaussian() as f32).collect();
            let negated: Vec<f32> = vector.iter().map(|v| -v).collect();
            let mut exclude: Vec<u32> = (0..n_rows / 4)
                .map(|_| random.below(n_rows) as u32)
                .collect();
            exclude.sort_unstable();
            for k in [1, 3, 10, n_rows, n_rows + 5] {
                for exclude in [&[][..], &exclude[..]] {
                    for vector in [&vector, &negated] {
                        let expected = reference_best_rows(&rows, vector, k, exclude);
                        let what = format!(
                            "rank {rank}, {n_rows} rows, k {k}, {} excluded",
                            exclude.len()
                        );
                        assert_same_rows(
                            &top::best_rows(&rows, vector, k, exclude),
                            &expected,
                            &what,
                        );
                        assert_same_rows(
                            &top::best_rows_portable(&rows, vector, k, exclude),
                            &expected,
                            &what,
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn trained_model_recommendations_equal_the_scalar_reference() {
    // The clustered implicit fixture, and a wide model at the benchmark's rank.
    let data = clustered_feedback(3);
    let params = AlsParams {
        rank: 10,
        implicit: true,
        alpha: 5.0,
        ..AlsParams::default()
    };
    let model = train(&data.train, &params, &mut |_| {}).unwrap();
    let wide = AlsModel {
        rank: 32,
        n_users: 20,
        n_items: 5003,
        user_factors: (0..20 * 32)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect(),
        item_factors: (0..5003 * 32)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 9.0)
            .collect(),
    };
    for model in [&model, &wide] {
        for user in 0..model.n_users as u32 {
            let x = model.user_factor(user).unwrap();
            let exclude: Vec<u32> = (0..model.n_items as u32)
                .filter(|i| (i + user) % 5 == 0)
                .collect();
            for k in [1, 10, 50] {
                let expected = reference_best_rows(&model.item_factors, x, k, &exclude);
                assert_same_rows(&model.recommend(user, k, &exclude), &expected, "recommend");
            }
        }
        for item in (0..model.n_items as u32).step_by(97) {
            let y = model.item_factor(item).unwrap();
            let expected = reference_best_rows(&model.user_factors, y, 10, &[]);
            assert_same_rows(
                &model.recommend_users(item, 10),
                &expected,
                "recommend_users",
            );
        }
    }
}

#[test]
fn invalid_params_are_rejected_with_the_parameter_named() {
    let good = ratings(1, 1, &[(0, 0, 1.0)]);
    let cases = [
        (
            AlsParams {
                rank: 0,
                ..AlsParams::default()
            },
            "rank",
        ),
        (
            AlsParams {
                rank: RANK_MAX + 1,
                ..AlsParams::default()
            },
            "rank",
        ),
        (
            AlsParams {
                iterations: 0,
                ..AlsParams::default()
            },
            "iterations",
        ),
        (
            AlsParams {
                regularization: -0.1,
                ..AlsParams::default()
            },
            "regularization",
        ),
        (
            AlsParams {
                regularization: f64::NAN,
                ..AlsParams::default()
            },
            "regularization",
        ),
        (
            AlsParams {
                alpha: -1.0,
                ..AlsParams::default()
            },
            "alpha",
        ),
        (
            AlsParams {
                alpha: f64::INFINITY,
                ..AlsParams::default()
            },
            "alpha",
        ),
    ];
    for (params, name) in cases {
        let error = train(&good, &params, &mut |_| {}).unwrap_err();
        assert!(
            matches!(error, AlsError::InvalidParameter { name: n, .. } if n == name),
            "{error}"
        );
    }
    let error = AlsParams {
        rank: 0,
        ..AlsParams::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid ALS parameter rank = 0: expected an integer from 1 to 1024"
    );
}

#[test]
fn bad_ratings_are_rejected_with_the_position() {
    let params = AlsParams::default();
    let check = |ratings: Ratings| train(&ratings, &params, &mut |_| {}).unwrap_err();
    assert!(matches!(check(ratings(2, 2, &[])), AlsError::NoRatings));
    let mut uneven = ratings(2, 2, &[(0, 0, 1.0)]);
    uneven.values.push(2.0);
    assert!(matches!(
        check(uneven),
        AlsError::LengthMismatch { values: 2, .. }
    ));
    let error = check(ratings(2, 2, &[(0, 0, 1.0), (2, 0, 1.0)]));
    assert_eq!(
        error.to_string(),
        "rating 1 refers to user 2, but there are only 2 users"
    );
    let error = check(ratings(2, 2, &[(0, 5, 1.0)]));
    assert!(matches!(
        error,
        AlsError::IndexOutOfRange {
            side: "item",
            index: 5,
            ..
        }
    ));
    let error = check(ratings(2, 2, &[(0, 0, 1.0), (1, 1, f32::NAN)]));
    assert!(matches!(
        error,
        AlsError::NonFiniteValue { position: 1, .. }
    ));
    let huge = ratings(FACTOR_VALUES_MAX, 1, &[(0, 0, 1.0)]);
    assert!(matches!(
        check(huge),
        AlsError::TooLarge { side: "user", .. }
    ));
}

/// Training time for the report (no assertion). Run with
/// `cargo test -p freshet-sql --release --lib models::als::tests::als_training_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn als_training_speed() {
    let shapes = [(1000, 1700, 100_000), (6000, 3700, 1_000_000)];
    for (n_users, n_items, count) in shapes {
        let data = low_rank_ratings(n_users, n_items, count, 0.1, 1);
        for rank in [10, 64] {
            for implicit in [false, true] {
                let params = AlsParams {
                    rank,
                    implicit,
                    ..AlsParams::default()
                };
                let started = Instant::now();
                let model = train(&data.train, &params, &mut |_| {}).unwrap();
                let seconds = started.elapsed().as_secs_f64();
                // Implicit scores are preferences, not ratings: their RMSE says nothing.
                let held_out = if implicit {
                    String::new()
                } else {
                    format!(", held-out RMSE {:.3}", model.rmse(&data.test))
                };
                println!(
                    "{count} ratings ({n_users} users, {n_items} items), rank {rank}, implicit \
                     {implicit}: {} iterations in {seconds:.2} s ({:.3} s/iteration){held_out}",
                    params.iterations,
                    seconds / params.iterations as f64,
                );
            }
        }
    }
}

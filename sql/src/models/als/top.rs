//! Keeping the `k` best-scoring candidates of a long stream.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// A scored candidate ordered best first: higher score, then lower index.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    index: u32,
    score: f32,
}

impl Ord for Candidate {
    /// `Greater` means better.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.index.cmp(&self.index))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// The `k` best of `candidates` as `(index, score)`, best first, ties broken by lower index.
/// Memory is bounded by `min(k, candidate count)`.
pub(super) fn top_k(candidates: impl Iterator<Item = (u32, f32)>, k: usize) -> Vec<(u32, f32)> {
    if k == 0 {
        return Vec::new();
    }
    // A min-heap of the best so far: its top is the worst kept candidate.
    let mut kept: BinaryHeap<Reverse<Candidate>> = BinaryHeap::new();
    for (index, score) in candidates {
        let candidate = Candidate { index, score };
        if kept.len() < k {
            kept.push(Reverse(candidate));
        } else if let Some(mut worst) = kept.peek_mut() {
            if candidate > worst.0 {
                *worst = Reverse(candidate);
            }
        }
    }
    // Ascending `Reverse` order is best first.
    kept.into_sorted_vec()
        .into_iter()
        .map(|Reverse(candidate)| (candidate.index, candidate.score))
        .collect()
}

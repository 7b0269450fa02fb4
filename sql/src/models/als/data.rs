//! Checked ratings in compressed-row form, once grouped by user and once by item.
//!
//! This is where the rules for duplicated (user, item) pairs live, so that training and fold-in
//! apply the same ones.

use super::{AlsError, Ratings};

/// Rows of sparse (column, value) entries: row `r` owns `starts[r]..starts[r + 1]` of `columns`
/// and `values`, with columns strictly ascending inside a row.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CompressedRows {
    starts: Vec<usize>,
    columns: Vec<u32>,
    values: Vec<f32>,
}

impl CompressedRows {
    pub(super) fn row_count(&self) -> usize {
        self.starts.len() - 1
    }

    pub(super) fn entry_count(&self) -> usize {
        self.columns.len()
    }

    pub(super) fn row(&self, row: usize) -> (&[u32], &[f32]) {
        let range = self.starts[row]..self.starts[row + 1];
        (&self.columns[range.clone()], &self.values[range])
    }

    pub(super) fn values(&self) -> &[f32] {
        &self.values
    }

    /// The same entries grouped by column: a stable counting sort, so the rows of each new row
    /// stay ascending.
    fn transpose(&self, column_count: usize) -> CompressedRows {
        let mut starts = vec![0usize; column_count + 1];
        for &column in &self.columns {
            starts[column as usize + 1] += 1;
        }
        for index in 0..column_count {
            starts[index + 1] += starts[index];
        }
        let mut next = starts.clone();
        let mut columns = vec![0u32; self.columns.len()];
        let mut values = vec![0f32; self.values.len()];
        for row in 0..self.row_count() {
            let (row_columns, row_values) = self.row(row);
            for (&column, &value) in row_columns.iter().zip(row_values) {
                let slot = &mut next[column as usize];
                columns[*slot] = row as u32;
                values[*slot] = value;
                *slot += 1;
            }
        }
        CompressedRows {
            starts,
            columns,
            values,
        }
    }
}

/// Training input after checking and merging duplicates.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Interactions {
    pub(super) by_user: CompressedRows,
    pub(super) by_item: CompressedRows,
}

impl Interactions {
    /// Checks `ratings` and groups them both ways, merging duplicated pairs (see
    /// [`merge_duplicates`]).
    pub(super) fn build(ratings: &Ratings, implicit: bool) -> Result<Interactions, AlsError> {
        check_ratings(ratings)?;
        let by_user = group_by_user(ratings, implicit);
        let by_item = by_user.transpose(ratings.n_items);
        Ok(Interactions { by_user, by_item })
    }
}

fn check_ratings(ratings: &Ratings) -> Result<(), AlsError> {
    let Ratings {
        n_users,
        n_items,
        users,
        items,
        values,
    } = ratings;
    if users.len() != items.len() || users.len() != values.len() {
        return Err(AlsError::LengthMismatch {
            users: users.len(),
            items: items.len(),
            values: values.len(),
        });
    }
    if users.is_empty() {
        return Err(AlsError::NoRatings);
    }
    let checks = [("user", users, *n_users), ("item", items, *n_items)];
    for (side, indices, count) in checks {
        if let Some(position) = indices.iter().position(|&index| index as usize >= count) {
            return Err(AlsError::IndexOutOfRange {
                position,
                side,
                index: indices[position],
                count,
            });
        }
    }
    if let Some(position) = values.iter().position(|value| !value.is_finite()) {
        return Err(AlsError::NonFiniteValue {
            position,
            value: values[position],
        });
    }
    Ok(())
}

/// Groups checked ratings by user with a stable counting sort, then merges each user's
/// duplicates.
fn group_by_user(ratings: &Ratings, implicit: bool) -> CompressedRows {
    let mut starts = vec![0usize; ratings.n_users + 1];
    for &user in &ratings.users {
        starts[user as usize + 1] += 1;
    }
    for index in 0..ratings.n_users {
        starts[index + 1] += starts[index];
    }
    let mut next = starts.clone();
    let mut columns = vec![0u32; ratings.items.len()];
    let mut values = vec![0f32; ratings.values.len()];
    for ((&user, &item), &value) in ratings
        .users
        .iter()
        .zip(&ratings.items)
        .zip(&ratings.values)
    {
        let slot = &mut next[user as usize];
        columns[*slot] = item;
        values[*slot] = value;
        *slot += 1;
    }
    // Merging shrinks rows, so the merged rows are written over the front of the same buffers.
    let mut written = 0;
    for user in 0..ratings.n_users {
        let range = starts[user]..starts[user + 1];
        let (row_columns, row_values) =
            merge_duplicates(&columns[range.clone()], &values[range], implicit);
        starts[user] = written;
        columns[written..written + row_columns.len()].copy_from_slice(&row_columns);
        values[written..written + row_values.len()].copy_from_slice(&row_values);
        written += row_columns.len();
    }
    starts[ratings.n_users] = written;
    columns.truncate(written);
    values.truncate(written);
    CompressedRows {
        starts,
        columns,
        values,
    }
}

/// Sorts one row's entries by column and merges repeated columns: implicit feedback adds them
/// up (three plays are three plays), explicit feedback keeps the last one in input order (a
/// re-rating replaces the earlier rating).
pub(super) fn merge_duplicates(
    columns: &[u32],
    values: &[f32],
    implicit: bool,
) -> (Vec<u32>, Vec<f32>) {
    let mut order: Vec<usize> = (0..columns.len()).collect();
    // A stable sort keeps equal columns in input order, which "keep the last" relies on.
    order.sort_by_key(|&position| columns[position]);
    let mut merged_columns: Vec<u32> = Vec::with_capacity(columns.len());
    let mut merged_values: Vec<f32> = Vec::with_capacity(columns.len());
    for position in order {
        let (column, value) = (columns[position], values[position]);
        match merged_columns.last() {
            Some(&last) if last == column => {
                let merged = merged_values.last_mut().expect("values follow columns");
                *merged = if implicit { *merged + value } else { value };
            }
            _ => {
                merged_columns.push(column);
                merged_values.push(value);
            }
        }
    }
    (merged_columns, merged_values)
}

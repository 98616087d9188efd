//! SQL text built at run time: the `VALUES` lists of multi-row statements, numbered the same
//! way on both backends (`$1`, `$2`, ...).

/// Rows per multi-row statement. At up to 10 parameters a row this stays far below the
/// parameter limits of both backends (32,766 on SQLite, 65,535 on PostgreSQL).
pub(crate) const ROWS_PER_STATEMENT: usize = 256;

/// `($first, ...), (...), ...`: `rows` tuples of `per_row` placeholders, numbered from `first`.
pub(crate) fn values_list(rows: usize, per_row: usize, first: usize) -> String {
    let tuples: Vec<String> = (0..rows)
        .map(|row| {
            let start = first + row * per_row;
            let placeholders: Vec<String> =
                (start..start + per_row).map(|n| format!("${n}")).collect();
            format!("({})", placeholders.join(", "))
        })
        .collect();
    tuples.join(", ")
}

/// `$first, ..., $(first + count - 1)`: the placeholders of an `IN (...)` list.
pub(crate) fn placeholder_list(count: usize, first: usize) -> String {
    let placeholders: Vec<String> = (first..first + count).map(|n| format!("${n}")).collect();
    placeholders.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_lists_number_their_placeholders_row_by_row() {
        assert_eq!(values_list(2, 3, 2), "($2, $3, $4), ($5, $6, $7)");
        assert_eq!(placeholder_list(3, 4), "$4, $5, $6");
    }
}

//! SQL text built at run time: the placeholders of multi-row statements, spelled as each
//! backend binds them fastest, and how many rows (and bytes of values) each statement takes.

use std::fmt::Write;

/// Rows per multi-row statement. At up to 10 parameters a row this stays far below the
/// parameter limits of both backends (32,766 on SQLite, 65,535 on PostgreSQL).
pub(crate) const ROWS_PER_STATEMENT: usize = 256;

/// Most bytes of values per multi-row statement (bodies, mostly), beyond the one row a statement
/// always takes. Far below PostgreSQL's 1 GB limit on a protocol message, whatever the
/// `--max-body` and the batch size.
pub(crate) const BYTES_PER_STATEMENT: usize = 64 * 1024 * 1024;

/// `items` cut, in order, into runs of at most `max_rows` items whose `size`s add up to at most
/// `max_bytes` (a run holds at least one item, however large): the rows of successive
/// multi-row statements.
pub(crate) fn statement_runs<T>(
    items: &[T],
    max_rows: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, item) in items.iter().enumerate() {
        let item_bytes = size(item);
        let full = index - start == max_rows || bytes + item_bytes > max_bytes;
        if index > start && full {
            runs.push(&items[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += item_bytes;
    }
    if start < items.len() {
        runs.push(&items[start..]);
    }
    runs
}

/// How a statement spells its parameters. Every parameter of one statement must use the same
/// style, in binding order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placeholders {
    /// `$1`, `$2`, ...: PostgreSQL's only style.
    Numbered,
    /// `?`, bound in order: SQLite looks up the name of every numbered parameter with a
    /// linear scan, which makes binding a statement of n numbered parameters cost n².
    Anonymous,
}

impl Placeholders {
    /// The placeholder of parameter number `n` (from 1).
    pub(crate) fn nth(self, n: usize) -> String {
        let mut sql = String::new();
        self.push_nth(&mut sql, n);
        sql
    }

    /// `(p_first, ...), (...), ...`: `rows` tuples of `per_row` placeholders, numbered from
    /// `first`. Written into one string: multi-row statements are built for every batch, and
    /// a string per placeholder cost a rebuild 2.4% of its samples.
    pub(crate) fn values_list(self, rows: usize, per_row: usize, first: usize) -> String {
        let mut sql = String::with_capacity(rows * (per_row * 7 + 2));
        for row in 0..rows {
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            self.push_list(&mut sql, per_row, first + row * per_row);
            sql.push(')');
        }
        sql
    }

    /// `p_first, ..., p_(first + count - 1)`: the placeholders of an `IN (...)` list.
    pub(crate) fn list(self, count: usize, first: usize) -> String {
        let mut sql = String::with_capacity(count * 7);
        self.push_list(&mut sql, count, first);
        sql
    }

    /// Appends [`Placeholders::list`]`(count, first)` to `sql`.
    fn push_list(self, sql: &mut String, count: usize, first: usize) {
        for n in first..first + count {
            if n > first {
                sql.push_str(", ");
            }
            self.push_nth(sql, n);
        }
    }

    /// Appends [`Placeholders::nth`]`(n)` to `sql`.
    fn push_nth(self, sql: &mut String, n: usize) {
        match self {
            Placeholders::Numbered => {
                // Writing into a `String` cannot fail.
                let _ = write!(sql, "${n}");
            }
            Placeholders::Anonymous => sql.push('?'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_runs_hold_at_most_the_rows_and_bytes_allowed_and_at_least_one_row() {
        let sizes = [3, 3, 3, 9, 1, 1, 1, 1];
        let runs = statement_runs(&sizes, 3, 6, |size| *size);
        assert_eq!(runs, [&[3, 3][..], &[3], &[9], &[1, 1, 1], &[1]]);
        assert!(statement_runs(&[] as &[usize], 3, 6, |size| *size).is_empty());
    }

    #[test]
    fn values_lists_number_their_placeholders_row_by_row() {
        let numbered = Placeholders::Numbered;
        assert_eq!(numbered.values_list(2, 3, 2), "($2, $3, $4), ($5, $6, $7)");
        assert_eq!(numbered.list(3, 4), "$4, $5, $6");
        assert_eq!(
            Placeholders::Anonymous.values_list(2, 2, 5),
            "(?, ?), (?, ?)"
        );
    }
}

//! SQL text built at run time: the placeholders of multi-row statements, spelled as each
//! backend binds them fastest.

/// Rows per multi-row statement. At up to 10 parameters a row this stays far below the
/// parameter limits of both backends (32,766 on SQLite, 65,535 on PostgreSQL).
pub(crate) const ROWS_PER_STATEMENT: usize = 256;

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
        match self {
            Placeholders::Numbered => format!("${n}"),
            Placeholders::Anonymous => "?".to_owned(),
        }
    }

    /// `(p_first, ...), (...), ...`: `rows` tuples of `per_row` placeholders, numbered from
    /// `first`.
    pub(crate) fn values_list(self, rows: usize, per_row: usize, first: usize) -> String {
        let tuples: Vec<String> = (0..rows)
            .map(|row| format!("({})", self.list(per_row, first + row * per_row)))
            .collect();
        tuples.join(", ")
    }

    /// `p_first, ..., p_(first + count - 1)`: the placeholders of an `IN (...)` list.
    pub(crate) fn list(self, count: usize, first: usize) -> String {
        let placeholders: Vec<String> = (first..first + count).map(|n| self.nth(n)).collect();
        placeholders.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

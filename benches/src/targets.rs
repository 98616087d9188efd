//! The performance targets `callfold-bench all` checks at its end: each target, the value this
//! run measured, and whether it is met. Sections fill in [`Findings`] as they measure.

/// What the sections measured that a target is about; `None` when not measured in this run.
#[derive(Debug, Default)]
pub struct Findings {
    /// `callfold serve` on SQLite, requests/s over the ceiling's.
    pub serve_share: Option<f64>,
    /// `callfold serve` on SQLite, requests/s over the peer's.
    pub serve_over_peer: Option<f64>,
    /// `callfold serve` on SQLite, median over rounds of the p99 acknowledgement, ms.
    pub serve_p99_ms: Option<f64>,
    /// `callfold ingest` on SQLite, requests/s over the ceiling's.
    pub ingest_share: Option<f64>,
    /// `callfold ingest` on SQLite: last round's requests/s over the first's, and the log then.
    pub ingest_decay: Option<(f64, i64)>,
    /// `callfold serve` on SQLite: last round's requests/s over the first's, and the log then.
    pub serve_decay: Option<(f64, i64)>,
    /// `callfold serve` on PostgreSQL, requests/s over the ceiling's.
    pub postgres_serve_share: Option<f64>,
    /// One projector worker catching up on PostgreSQL, events/s.
    pub postgres_fold_rate: Option<f64>,
    /// One projector worker catching up on SQLite, events/s.
    pub sqlite_fold_rate: Option<f64>,
    /// `callfold rebuild` on SQLite over the raw read of the same rows.
    pub rebuild_over_raw: Option<f64>,
    /// `callfold rebuild` on SQLite, events/s.
    pub rebuild_rate: Option<f64>,
    /// `callfold rebuild` on SQLite, peak RSS in MiB.
    pub rebuild_rss_mib: Option<f64>,
    /// `callfold serve` on SQLite under 4x the connections, peak RSS in MiB.
    pub overload_rss_mib: Option<f64>,
    /// The connections of that overload.
    pub overload_connections: usize,
}

/// One line of the table.
struct Row {
    target: String,
    measured: Option<String>,
    met: bool,
}

fn at_least(target: &str, value: Option<f64>, bound: f64, decimals: usize) -> Row {
    Row {
        target: target.to_owned(),
        measured: value.map(|value| format!("{value:.decimals$}")),
        met: value.is_some_and(|value| value >= bound),
    }
}

fn below(target: &str, value: Option<f64>, bound: f64, decimals: usize) -> Row {
    Row {
        target: target.to_owned(),
        measured: value.map(|value| format!("{value:.decimals$}")),
        met: value.is_some_and(|value| value < bound),
    }
}

fn no_decay(target: &str, decay: Option<(f64, i64)>) -> Row {
    Row {
        target: target.to_owned(),
        measured: decay.map(|(ratio, log)| format!("{ratio:.2} (log of {log} at the last round)")),
        met: decay.is_some_and(|(ratio, log)| ratio >= 0.8 && log >= 1_000_000),
    }
}

impl Findings {
    /// Prints the table of targets.
    pub fn print(&self) {
        println!("## Targets\n");
        println!("| target | measured | met |");
        println!("|---|---|---|");
        for row in self
            .ingest_rows()
            .into_iter()
            .chain(self.fold_and_memory_rows())
        {
            let (measured, met) = match row.measured {
                Some(measured) => (measured, if row.met { "yes" } else { "no" }),
                None => ("not measured".to_owned(), ""),
            };
            println!("| {} | {measured} | {met} |", row.target);
        }
        println!();
    }

    /// The targets of the ingest ladder.
    fn ingest_rows(&self) -> [Row; 7] {
        [
            at_least(
                "callfold serve, SQLite: ≥ 0.20 of the ceiling",
                self.serve_share,
                0.20,
                2,
            ),
            at_least(
                "callfold serve, SQLite: ≥ 10x the peer",
                self.serve_over_peer,
                10.0,
                2,
            ),
            below(
                "callfold serve, SQLite: p99 acknowledgement < 10 ms",
                self.serve_p99_ms,
                10.0,
                2,
            ),
            at_least(
                "callfold ingest, SQLite: ≥ 0.30 of the ceiling",
                self.ingest_share,
                0.30,
                2,
            ),
            no_decay(
                "callfold ingest, SQLite: last round ≥ 0.8 of the first, log past 1,000,000",
                self.ingest_decay,
            ),
            no_decay(
                "callfold serve, SQLite: last round ≥ 0.8 of the first, log past 1,000,000",
                self.serve_decay,
            ),
            at_least(
                "callfold serve, PostgreSQL: ≥ 0.15 of the ceiling",
                self.postgres_serve_share,
                0.15,
                2,
            ),
        ]
    }

    /// The targets of the projector, the rebuild and memory.
    fn fold_and_memory_rows(&self) -> [Row; 6] {
        let overload = format!(
            "callfold serve, SQLite, peak RSS at {} connections < 128 MiB",
            self.overload_connections
        );
        [
            at_least(
                "one projector worker catching up, PostgreSQL: ≥ 50,000 events/s",
                self.postgres_fold_rate,
                50_000.0,
                0,
            ),
            at_least(
                "one projector worker catching up, SQLite: ≥ 50,000 events/s",
                self.sqlite_fold_rate,
                50_000.0,
                0,
            ),
            at_least(
                "rebuild, SQLite: ≥ 0.7 of the raw read",
                self.rebuild_over_raw,
                0.7,
                2,
            ),
            at_least(
                "rebuild, SQLite: ≥ 150,000 events/s",
                self.rebuild_rate,
                150_000.0,
                0,
            ),
            below(&overload, self.overload_rss_mib, 128.0, 0),
            below(
                "rebuild, SQLite, peak RSS < 256 MiB",
                self.rebuild_rss_mib,
                256.0,
                0,
            ),
        ]
    }
}

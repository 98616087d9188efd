//! The ingest benchmark, a ladder: the same pre-signed requests, over the same C connections,
//! against targets that each do more than the one before (the ceiling, verify and parse, a
//! minimal group-commit append, `callfold ingest`, `callfold serve`), and beside them
//! `callfold serve` on PostgreSQL and the Express peer.
//!
//! Rounds are interleaved: round r of every target runs before round r+1 of any, so that a
//! change in the machine's other load touches every target alike. Each round signs fresh
//! deliveries (2% of them sent twice, right after the original, as an impatient retry) before
//! its clock starts; one unmeasured warm-up round comes first. Between rounds, the logs of the
//! SQLite rungs that keep one are grown directly (not over HTTP), so that their last round runs
//! on a log of the size asked for. Per round: requests/s, latency quantiles, and from `/proc`
//! the server's CPU time and storage writes, and the growth of its database files; after the
//! last round, what the SQLite targets' latest commits wrote to their WAL, by B-tree.

use std::path::{Path, PathBuf};

use callfold_ingest::WebhookSecrets;
use callfold_simulate::{SignedDelivery, SimulateOptions, invent_events, sign_deliveries};
use callfold_store::Store;

use crate::servers::{BENCH_SECRET, Server};
use crate::stats::Rounds;
use crate::wal_pages::WalPages;
use crate::{late, rebuild, rungs};

/// Share of a ladder round's deliveries sent twice.
const LADDER_DUPLICATES: f64 = 0.02;

/// How a target is loaded.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Measured rounds.
    pub rounds: usize,
    /// Requests per round.
    pub requests: usize,
    /// Connections kept busy.
    pub connections: usize,
    /// Events the growing logs reach, at the latest before the last round.
    pub log_events: usize,
}

impl Load {
    /// Events grown into a log before `round`: from none before the first round to
    /// `log_events` before the last, in equal steps.
    fn grown_before(&self, round: usize) -> usize {
        match self.rounds {
            0 | 1 => 0,
            rounds => self.log_events * round / (rounds - 1),
        }
    }
}

/// The targets of the ladder, in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rung {
    /// A bench-only axum server that answers 200 and does nothing: the ceiling.
    Ceiling,
    /// The ceiling plus header parsing, signature verification and the envelope.
    Verify,
    /// Verify plus a minimal durable group-commit append to SQLite.
    GroupCommit,
    /// `callfold ingest` on SQLite.
    Ingest,
    /// `callfold serve` on SQLite.
    Serve,
    /// `callfold serve` on PostgreSQL.
    ServePostgres,
    /// The hand-written Express peer.
    Peer,
}

impl Rung {
    /// The target's name in the tables.
    pub fn name(self) -> &'static str {
        match self {
            Rung::Ceiling => "(a) no-op axum server (the ceiling)",
            Rung::Verify => "(b) + verify and parse (bench-only)",
            Rung::GroupCommit => "(c) + group-commit append, SQLite FULL (bench-only)",
            Rung::Ingest => "(d) callfold ingest, SQLite",
            Rung::Serve => "(e) callfold serve, SQLite",
            Rung::ServePostgres => "callfold serve, PostgreSQL",
            Rung::Peer => "peer (Express + standardwebhooks + SQLite FULL)",
        }
    }
}

/// The log a target keeps, and how the benchmark grows it between rounds.
#[derive(Clone, Debug)]
pub enum Growth {
    /// No log, or one that only the measured rounds grow.
    None,
    /// The group-commit rung's table in this SQLite file.
    GroupCommit(PathBuf),
    /// callfold's log at this URL; with `folded`, the benchmark also waits until the server's
    /// projector has folded what was grown.
    Callfold {
        /// The database URL.
        url: String,
        /// Whether the server folds (serve) or only receives (ingest).
        folded: bool,
    },
}

/// One target of the ladder, its server and what it did.
pub struct Target {
    /// Which target.
    pub rung: Rung,
    /// Its server process.
    pub server: Server,
    growth: Growth,
    files: Vec<PathBuf>,
    seed: u64,
    grown: usize,
    /// What it did, round by round.
    pub result: IngestResult,
}

/// What one target did under the load, round by round.
#[derive(Debug, Default)]
pub struct IngestResult {
    /// Requests answered per second.
    pub requests_per_second: Rounds,
    /// Median acknowledgement latency, ms.
    pub p50_ms: Rounds,
    /// 99th percentile acknowledgement latency, ms.
    pub p99_ms: Rounds,
    /// The server's user and system CPU time per request, µs.
    pub cpu_us_per_request: Rounds,
    /// Bytes the server caused to be written to storage, per request.
    pub written_per_request: Rounds,
    /// Growth of its database files (database and WAL), in bytes per request.
    pub files_growth_per_request: Rounds,
    /// Records in its log when each round started (growing targets only).
    pub log_at_round: Vec<i64>,
    /// Answers other than 200, over every round.
    pub not_ok: usize,
    /// Peak resident memory of the server, MiB.
    pub peak_rss_mib: f64,
    /// What the last round's commits wrote to the WAL, by B-tree (SQLite targets), or why it
    /// could not be read.
    pub wal_pages: Option<Result<WalPages, String>>,
}

impl IngestResult {
    /// The last round's requests/s over the first's.
    pub fn last_over_first(&self) -> f64 {
        self.requests_per_second.last() / self.requests_per_second.first()
    }
}

/// A SQLite database's files whose growth is measured: the database and its WAL.
pub fn sqlite_files(database: &Path) -> Vec<PathBuf> {
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    vec![database.to_owned(), PathBuf::from(wal)]
}

fn files_size(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .filter_map(|file| std::fs::metadata(file).ok())
        .map(|metadata| metadata.len())
        .sum()
}

impl Target {
    /// A target whose requests are invented from seeds `seed..`; `files` are measured for
    /// growth.
    pub fn new(rung: Rung, server: Server, growth: Growth, files: Vec<PathBuf>, seed: u64) -> Self {
        Self {
            rung,
            server,
            growth,
            files,
            seed,
            grown: 0,
            result: IngestResult::default(),
        }
    }

    /// One unmeasured round of a quarter of the requests.
    pub async fn warm_up(&self, load: Load) {
        let url = [self.server.webhook_url()];
        let deliveries = ladder_deliveries(load.requests / 4 + 1, self.seed);
        callfold_simulate::send(&url, deliveries, load.connections).await;
    }

    /// Grows the target's log to what `load` asks before `round`, and notes its length.
    pub async fn prepare_round(&mut self, load: Load, round: usize) -> anyhow::Result<()> {
        let more = load.grown_before(round).saturating_sub(self.grown);
        let seed = self.seed + 500 + round as u64;
        let length = match &self.growth {
            Growth::None => return Ok(()),
            Growth::GroupCommit(path) => {
                let now = chrono::Utc::now();
                let mut events = invent_events(more * 10 / 37 + 1, seed, now);
                events.truncate(more);
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    rungs::grow_table(&path, events, now.timestamp())
                })
                .await??
            }
            Growth::Callfold { url, folded } => {
                let store = Store::connect(url).await?;
                if more > 0 {
                    rebuild::append_invented(&store, more, seed).await?;
                }
                if *folded {
                    late::wait_until_folded(&store).await?;
                }
                let length = store.log_len().await?;
                store.close().await;
                length
            }
        };
        self.grown += more;
        self.result.log_at_round.push(length);
        Ok(())
    }

    /// One measured round.
    pub async fn measure_round(&mut self, load: Load, round: usize) {
        let url = [self.server.webhook_url()];
        let deliveries = ladder_deliveries(load.requests, self.seed + 1 + round as u64);
        let (counters, size) = (self.server.counters(), files_size(&self.files));
        let report = callfold_simulate::send(&url, deliveries, load.connections).await;
        let used = self.server.counters().since(counters);
        let grew = files_size(&self.files) as f64 - size as f64;
        let requests = report.answers.len().max(1) as f64;
        let result = &mut self.result;
        result.requests_per_second.push(report.throughput());
        result
            .p50_ms
            .push(report.latency_quantile(0.5).as_secs_f64() * 1000.0);
        result
            .p99_ms
            .push(report.latency_quantile(0.99).as_secs_f64() * 1000.0);
        result
            .cpu_us_per_request
            .push(used.cpu_seconds * 1e6 / requests);
        result
            .written_per_request
            .push(used.write_bytes as f64 / requests);
        result.files_growth_per_request.push(grew / requests);
        result.not_ok += report
            .answers
            .iter()
            .filter(|answer| answer.status != Some(200))
            .count();
        result.peak_rss_mib = self.server.peak_rss_mib();
        if round + 1 == load.rounds
            && let [database, wal] = self.files.as_slice()
        {
            let (database, wal) = (database.clone(), wal.clone());
            let read = tokio::task::spawn_blocking(move || WalPages::read(&database, &wal)).await;
            result.wal_pages = Some(match read {
                Ok(pages) => pages.map_err(|error| format!("{error:#}")),
                Err(error) => Err(error.to_string()),
            });
        }
    }
}

/// `requests` new deliveries invented from `seed`, signed now, none repeated.
pub fn signed_deliveries(requests: usize, seed: u64) -> Vec<SignedDelivery> {
    signed(requests, seed, 0.0)
}

/// `requests` new deliveries invented from `seed`, signed now, 2% of them sent twice.
fn ladder_deliveries(requests: usize, seed: u64) -> Vec<SignedDelivery> {
    signed(requests, seed, LADDER_DUPLICATES)
}

fn signed(requests: usize, seed: u64, duplicates: f64) -> Vec<SignedDelivery> {
    let secrets = WebhookSecrets::parse(BENCH_SECRET).expect("the benchmark secret parses");
    let secret = secrets.iter().next().expect("one secret");
    let now = chrono::Utc::now();
    // Each call produces at least three events.
    let mut events = invent_events(requests / 3 + 1, seed, now);
    events.truncate(requests);
    let options = SimulateOptions {
        urls: Vec::new(),
        calls: 0,
        concurrency: 0,
        duplicates,
        shuffle: false,
        seed,
    };
    sign_deliveries(events, secret, now.timestamp(), &options)
}

/// What a server did with `connections` connections, far past its capacity.
#[derive(Debug)]
pub struct Overload {
    /// Connections used.
    pub connections: usize,
    /// Answers by status (`None`: no answer).
    pub answers_503: usize,
    /// Every answer.
    pub answers: usize,
    /// Peak resident memory of the server, MiB, after the overload.
    pub peak_rss_mib: f64,
}

/// One round with `connections` connections.
pub async fn overload(server: &Server, requests: usize, connections: usize, seed: u64) -> Overload {
    let url = [server.webhook_url()];
    let report =
        callfold_simulate::send(&url, signed_deliveries(requests, seed), connections).await;
    Overload {
        connections,
        answers_503: report
            .answers
            .iter()
            .filter(|answer| answer.status == Some(503))
            .count(),
        answers: report.answers.len(),
        peak_rss_mib: server.peak_rss_mib(),
    }
}

//! `callfold-bench`: one command that measures callfold on this machine and prints tables.
//!
//! - `ingest`: the ladder. Requests/s, acknowledgement latency, CPU and disk writes per request
//!   under C busy connections, for a ceiling (a bench-only axum server that answers 200 and
//!   does nothing), the ceiling plus verification, plus a minimal group-commit append (both
//!   bench-only), `callfold ingest` and `callfold serve` on SQLite (whose logs grow to a million
//!   events over the rounds), `callfold serve` on PostgreSQL when `DATABASE_URL` names one, and
//!   the hand-written Express peer in `benches/peers/`; then ratios, and memory under 4x the
//!   connections.
//! - `rebuild`: a log of N events, the raw streaming read of the rows a rebuild reads,
//!   `callfold rebuild` over them with its peak memory, and one `callfold projector` worker
//!   folding every call again.
//! - `late`: the cost of one late event with a small and a large log.
//! - `rebuild-under-load`: acknowledgement latency of a steady stream of deliveries to
//!   `callfold serve` over a large log, without and during `callfold rebuild`.
//! - `reads-under-load`: acknowledgement latency on a large SQLite log at a steady rate,
//!   without reads and with `/status` and `/v1/stats` requested in loops.
//! - `all`: the five above, then the table of targets (`ingest` and `rebuild` print the rows
//!   they measured). `--smoke` shrinks everything to seconds (CI runs it; it asserts nothing
//!   about speed).
//! - `connections`: the memory an idle connection costs, silent and kept alive.
//!
//! Method and reading guide: `docs/benchmarks.md`.

mod connections;
mod ingest;
mod late;
mod reads;
mod rebuild;
mod rungs;
mod servers;
mod stats;
mod targets;
mod under_load;
mod wal_pages;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use callfold_store::Store;
use clap::{Args, Parser, Subcommand};

use crate::ingest::{Growth, Load, Rung, Target, sqlite_files};
use crate::servers::{
    Placement, start_callfold, start_callfold_command, start_ceiling, start_group_commit,
    start_peer, start_verify,
};
use crate::stats::{MedianSpread, Rounds};
use crate::targets::Findings;

/// Benchmarks of callfold, printed as tables.
#[derive(Debug, Parser)]
#[command(name = "callfold-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ingest, rebuild, late events, rebuild under load and reads under load, in that order.
    All(Options),
    /// The ingest ladder: throughput, latency, CPU and disk per request, from the ceiling to
    /// callfold serve, and the peer.
    Ingest(Options),
    /// Rebuild rate against the raw read rate, and peak memory.
    Rebuild(Options),
    /// The cost of one late event, with a small and a large log.
    Late(Options),
    /// Acknowledgement latency of a steady stream of deliveries, without and during rebuilds.
    RebuildUnderLoad(Options),
    /// The memory of N idle connections, silent and kept alive after one request (the
    /// process needs `ulimit -n` above N).
    Connections {
        /// Idle connections to open.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
    },
    /// Acknowledgement latency with and without reads of /status and /v1/stats (SQLite).
    ReadsUnderLoad(Options),
    /// The ceiling server (started by `ingest`).
    #[command(hide = true)]
    CeilingServer {
        #[arg(long)]
        port: u16,
    },
    /// The verify rung's server (started by `ingest`).
    #[command(hide = true)]
    VerifyServer {
        #[arg(long)]
        port: u16,
    },
    /// The group-commit rung's server (started by `ingest`).
    #[command(hide = true)]
    GroupCommitServer {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        database: std::path::PathBuf,
    },
}

#[derive(Clone, Debug, Args)]
struct Options {
    /// Seconds instead of minutes: few rounds, small logs. For CI; the numbers mean little.
    #[arg(long)]
    smoke: bool,
    /// Measured ingest rounds per target.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Requests per ingest round.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Connections kept busy.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Events the logs of the SQLite ingest rungs are grown to, in equal steps between the
    /// rounds, before the last round.
    #[arg(long, default_value_t = 1_000_000)]
    log_events: usize,
    /// Events in the large log (rebuild, late events, reads under load).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Events in the small log (late events).
    #[arg(long, default_value_t = 10_000)]
    small_log: usize,
    /// Late events sent per log.
    #[arg(long, default_value_t = 7)]
    probes: usize,
    /// Deliveries per second of the steady stream (rebuild and reads under load).
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// Seconds of the steady stream measured before the first rebuild (rebuild under load).
    #[arg(long, default_value_t = 10)]
    baseline_secs: u64,
    /// Seconds of each phase of reads under load (without reads, then with, --rounds times).
    #[arg(long, default_value_t = 10)]
    phase_seconds: u64,
    /// Loops requesting /status and /v1/stats at once, in the phase with reads.
    #[arg(long, default_value_t = 2)]
    read_loops: usize,
    /// Where the SQLite databases go (kept afterwards); a temporary folder by default.
    #[arg(long)]
    scratch: Option<std::path::PathBuf>,
    /// A PostgreSQL database to measure too (the benchmark works in a schema of its own and
    /// drops it at the end).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
}

impl Options {
    fn effective(&self) -> Self {
        if !self.smoke {
            return self.clone();
        }
        Self {
            rounds: 2,
            requests: 1_000,
            log_events: 3_000,
            events: 5_000,
            small_log: 1_000,
            probes: 3,
            rate: 200.0,
            baseline_secs: 1,
            phase_seconds: 2,
            ..self.clone()
        }
    }

    fn load(&self) -> Load {
        Load {
            rounds: self.rounds,
            requests: self.requests,
            connections: self.connections,
            log_events: self.log_events,
        }
    }

    fn postgres_url(&self) -> Option<&str> {
        self.database_url
            .as_deref()
            .filter(|url| url.starts_with("postgres"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.is_bench_server() {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime starts");
        return exit_code(runtime.block_on(serve_bench_server(cli.command)));
    }
    let cores = servers::machine_cores();
    // Before any thread exists, so that every thread of the load generator stays on core 0.
    let pinned = servers::pin_this_process();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime starts");
    exit_code(runtime.block_on(run(cli.command, cores, pinned)))
}

impl Command {
    /// Whether this is one of the bench-only servers the benchmark starts.
    fn is_bench_server(&self) -> bool {
        matches!(
            self,
            Command::CeilingServer { .. }
                | Command::VerifyServer { .. }
                | Command::GroupCommitServer { .. }
        )
    }
}

/// Runs one of the bench-only servers until killed.
async fn serve_bench_server(command: Command) -> anyhow::Result<()> {
    match command {
        Command::CeilingServer { port } => servers::serve_ceiling(port).await,
        Command::VerifyServer { port } => rungs::serve_verify(port).await,
        Command::GroupCommitServer { port, database } => {
            rungs::serve_group_commit(port, &database).await
        }
        _ => unreachable!("only the bench-only servers come here"),
    }
}

/// Success, or the error printed on stderr and a failure.
fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, cores: usize, pinned: bool) -> anyhow::Result<()> {
    let (options, sections) = match command {
        Command::All(options) => (options, [true, true, true, true, true]),
        Command::Ingest(options) => (options, [true, false, false, false, false]),
        Command::Rebuild(options) => (options, [false, true, false, false, false]),
        Command::Late(options) => (options, [false, false, true, false, false]),
        Command::RebuildUnderLoad(options) => (options, [false, false, false, true, false]),
        Command::ReadsUnderLoad(options) => (options, [false, false, false, false, true]),
        Command::Connections { connections } => {
            print_machine(cores, pinned);
            let scratch = tempfile::tempdir()?;
            return connections::measure(connections, scratch.path()).await;
        }
        Command::CeilingServer { .. }
        | Command::VerifyServer { .. }
        | Command::GroupCommitServer { .. } => unreachable!("handled before the runtime"),
    };
    let options = options.effective();
    print_machine(cores, pinned);
    let temporary = tempfile::tempdir()?;
    let scratch = match &options.scratch {
        Some(folder) => {
            std::fs::create_dir_all(folder)?;
            folder.clone()
        }
        None => temporary.path().to_owned(),
    };
    let postgres = match options.postgres_url() {
        Some(url) => Some(Scratch::create(url).await?),
        None => None,
    };
    let mut findings = Findings::default();
    if sections[0] {
        ingest_section(&options, &scratch, postgres.as_ref(), &mut findings).await?;
    }
    if sections[1] {
        rebuild_section(&options, &scratch, postgres.as_ref(), &mut findings).await?;
    }
    if sections[2] {
        late_section(&options, &scratch, postgres.as_ref()).await?;
    }
    if sections[3] {
        rebuild_under_load_section(&options, &scratch, postgres.as_ref()).await?;
    }
    if sections[4] {
        reads_section(&options, &scratch).await?;
    }
    if sections[0] || sections[1] {
        findings.print();
    }
    if let Some(postgres) = postgres {
        postgres.drop_all().await?;
    }
    Ok(())
}

fn print_machine(cores: usize, pinned: bool) {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let placement = if pinned {
        "load generator on core 0, servers on core 1"
    } else {
        "not pinned (one core, or no taskset)"
    };
    println!("machine: {cores} cores, {model}; {placement}\n");
}

/// PostgreSQL schemas the benchmark creates and drops.
struct Scratch {
    base_url: String,
    schemas: std::sync::Mutex<Vec<String>>,
}

impl Scratch {
    async fn create(base_url: &str) -> anyhow::Result<Self> {
        Store::connect(base_url)
            .await
            .context("cannot reach the PostgreSQL given by DATABASE_URL")?
            .close()
            .await;
        Ok(Self {
            base_url: base_url.to_owned(),
            schemas: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The URL of a new, empty schema.
    async fn schema(&self, name: &str) -> anyhow::Result<String> {
        let schema = format!("callfold_bench_{name}_{}", std::process::id());
        self.execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await?;
        self.schemas
            .lock()
            .expect("not poisoned")
            .push(schema.clone());
        let separator = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!(
            "{}{separator}options[search_path]={schema}",
            self.base_url
        ))
    }

    async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        let store = Store::connect(&self.base_url).await?;
        if let Store::Postgres(pools) = &store {
            sqlx::raw_sql(sql).execute(&pools.writer).await?;
        }
        store.close().await;
        Ok(())
    }

    async fn drop_all(self) -> anyhow::Result<()> {
        let schemas = self.schemas.lock().expect("not poisoned").clone();
        for schema in schemas {
            self.execute(&format!("DROP SCHEMA {schema} CASCADE"))
                .await?;
        }
        Ok(())
    }
}

/// `name` in `scratch`, with what an earlier run left there (under `--scratch`) removed, so
/// that a log starts empty.
fn fresh_database(scratch: &std::path::Path, name: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = scratch.join(name);
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::remove_file(&file) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error.into()),
            _ => {}
        }
    }
    Ok(path)
}

/// Starts every target of the ladder, in its order.
async fn start_ladder(
    scratch: &std::path::Path,
    postgres: Option<&Scratch>,
) -> anyhow::Result<Vec<Target>> {
    let mut targets = vec![
        Target::new(
            Rung::Ceiling,
            start_ceiling().await?,
            Growth::None,
            Vec::new(),
            1_000,
        ),
        Target::new(
            Rung::Verify,
            start_verify().await?,
            Growth::None,
            Vec::new(),
            1_500,
        ),
    ];
    let group_commit = fresh_database(scratch, "ladder-group-commit.db")?;
    targets.push(Target::new(
        Rung::GroupCommit,
        start_group_commit(&group_commit).await?,
        Growth::GroupCommit(group_commit.clone()),
        sqlite_files(&group_commit),
        2_000,
    ));
    for (rung, subcommand, seed) in [
        (Rung::Ingest, "ingest", 2_500),
        (Rung::Serve, "serve", 3_000),
    ] {
        let path = fresh_database(scratch, &format!("ladder-{subcommand}.db"))?;
        let url = format!("sqlite:{}", path.display());
        let server = start_callfold_command(subcommand, &url, &[]).await?;
        let growth = Growth::Callfold {
            url,
            folded: rung == Rung::Serve,
        };
        targets.push(Target::new(rung, server, growth, sqlite_files(&path), seed));
    }
    if let Some(postgres) = postgres {
        let url = postgres.schema("ingest").await?;
        let server = start_callfold(&url, &[]).await?;
        targets.push(Target::new(
            Rung::ServePostgres,
            server,
            Growth::None,
            Vec::new(),
            3_500,
        ));
    }
    let peer_database = fresh_database(scratch, "peer.db")?;
    match start_peer(scratch).await {
        Ok(Some(server)) => targets.push(Target::new(
            Rung::Peer,
            server,
            Growth::None,
            sqlite_files(&peer_database),
            4_000,
        )),
        Ok(None) => println!("The peer was not run: Node.js is not installed.\n"),
        Err(error) => println!("The peer was not run: {error:#}\n"),
    }
    Ok(targets)
}

fn ingest_row(target: &Target, ceiling: f64) {
    let result = &target.result;
    println!(
        "| {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
        target.rung.name(),
        result.requests_per_second.median() / ceiling,
        MedianSpread(&result.requests_per_second, 0),
        MedianSpread(&result.p50_ms, 2),
        MedianSpread(&result.p99_ms, 2),
        MedianSpread(&result.cpu_us_per_request, 0),
        MedianSpread(&result.written_per_request, 0),
        MedianSpread(&result.files_growth_per_request, 0),
        result.not_ok,
        result.peak_rss_mib
    );
}

async fn ingest_section(
    options: &Options,
    scratch: &std::path::Path,
    postgres: Option<&Scratch>,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let load = options.load();
    println!(
        "## Ingest, the ladder: {} rounds of {} requests (2% sent twice) over {} connections, \
         interleaved; the SQLite logs of (c), (d) and (e) grown to {} events by the last round \
         (median ±half-range)\n",
        load.rounds, load.requests, load.connections, load.log_events
    );
    let mut targets = start_ladder(scratch, postgres).await?;
    for target in &targets {
        target.warm_up(load).await;
    }
    for round in 0..load.rounds {
        for target in &mut targets {
            target.prepare_round(load, round).await?;
        }
        for target in &mut targets {
            target.measure_round(load, round).await;
        }
    }
    let ladder = Ladder(&targets);
    ladder.print_rungs();
    ladder.print_decay();
    ladder.print_wal_pages();
    ladder.print_ratios();
    ladder.record(findings);
    if let Some(serve) = ladder.find(Rung::Serve) {
        let overload =
            ingest::overload(&serve.server, load.requests, load.connections * 4, 4_900).await;
        println!(
            "\nOverload, callfold serve on SQLite with {} connections: {} of {} answers were \
             503; peak RSS {:.0} MiB.\n",
            overload.connections, overload.answers_503, overload.answers, overload.peak_rss_mib
        );
        findings.overload_rss_mib = Some(overload.peak_rss_mib);
        findings.overload_connections = overload.connections;
    }
    Ok(())
}

/// Tables and indexes named in each row of the WAL pages table.
const WAL_BTREES_SHOWN: usize = 6;

/// The ladder's targets once measured: what the tables and the findings read.
struct Ladder<'a>(&'a [Target]);

impl Ladder<'_> {
    fn find(&self, rung: Rung) -> Option<&Target> {
        self.0.iter().find(|target| target.rung == rung)
    }

    /// The median requests/s of `rung`, when it ran.
    fn rate(&self, rung: Rung) -> Option<f64> {
        self.find(rung)
            .map(|target| target.result.requests_per_second.median())
    }

    /// `rung`'s rate as a share of the ceiling's.
    fn share(&self, rung: Rung) -> Option<f64> {
        let ceiling = self.rate(Rung::Ceiling).unwrap_or(f64::NAN);
        self.rate(rung).map(|value| value / ceiling)
    }

    fn print_rungs(&self) {
        let ceiling = self.rate(Rung::Ceiling).unwrap_or(f64::NAN);
        println!(
            "| target | share of the ceiling | requests/s | p50 ms | p99 ms | CPU µs/request \
             | disk written B/request | database+WAL growth B/request | non-200 | peak RSS MiB |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for target in self.0 {
            ingest_row(target, ceiling);
        }
    }

    /// The first and last rounds' rates of each target whose log grew between rounds.
    fn print_decay(&self) {
        println!(
            "\n| log grown between rounds | log at the first round | log at the last round \
             | first round requests/s | last round requests/s | last / first |"
        );
        println!("|---|---|---|---|---|---|");
        for target in self
            .0
            .iter()
            .filter(|target| !target.result.log_at_round.is_empty())
        {
            let result = &target.result;
            println!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.2} |",
                target.rung.name(),
                result.log_at_round.first().copied().unwrap_or_default(),
                result.log_at_round.last().copied().unwrap_or_default(),
                result.requests_per_second.first(),
                result.requests_per_second.last(),
                result.last_over_first()
            );
        }
    }

    /// Pages per commit in each SQLite target's WAL after the last round, and the B-trees
    /// that most of them belong to.
    fn print_wal_pages(&self) {
        println!(
            "\n| WAL at the end of the last round | commits | pages per commit \
             | share of the pages by table or index, most first |"
        );
        println!("|---|---|---|---|");
        for target in self.0 {
            let Some(wal_pages) = &target.result.wal_pages else {
                continue;
            };
            let name = target.rung.name();
            match wal_pages {
                Ok(pages) => {
                    let btrees: Vec<String> = pages
                        .by_btree
                        .iter()
                        .take(WAL_BTREES_SHOWN)
                        .map(|(btree, frames)| format!("{btree} {:.0}%", pages.share(*frames)))
                        .collect();
                    println!(
                        "| {name} | {} | {:.1} | {} |",
                        pages.commits,
                        pages.per_commit(),
                        btrees.join(", ")
                    );
                }
                Err(error) => println!("| {name} | not read: {error} | | |"),
            }
        }
    }

    fn print_ratios(&self) {
        println!("\n| ratio of requests/s | value |\n|---|---|");
        let ratios = [
            (
                "callfold serve, SQLite / ceiling",
                Rung::Serve,
                Rung::Ceiling,
            ),
            (
                "callfold ingest, SQLite / ceiling",
                Rung::Ingest,
                Rung::Ceiling,
            ),
            (
                "callfold serve, PostgreSQL / ceiling",
                Rung::ServePostgres,
                Rung::Ceiling,
            ),
            (
                "callfold serve, SQLite / group commit",
                Rung::Serve,
                Rung::GroupCommit,
            ),
            (
                "callfold ingest, SQLite / group commit",
                Rung::Ingest,
                Rung::GroupCommit,
            ),
            ("callfold serve, SQLite / peer", Rung::Serve, Rung::Peer),
        ];
        for (name, numerator, denominator) in ratios {
            if let (Some(numerator), Some(denominator)) =
                (self.rate(numerator), self.rate(denominator))
            {
                println!("| {name} | {:.2} |", numerator / denominator);
            }
        }
    }

    /// What the targets table reads of the ladder.
    fn record(&self, findings: &mut Findings) {
        findings.serve_share = self.share(Rung::Serve);
        findings.ingest_share = self.share(Rung::Ingest);
        findings.postgres_serve_share = self.share(Rung::ServePostgres);
        findings.serve_over_peer = self
            .rate(Rung::Serve)
            .zip(self.rate(Rung::Peer))
            .map(|(serve, peer)| serve / peer);
        let decay = |rung: Rung| {
            self.find(rung).map(|target| {
                let result = &target.result;
                let last_log = result.log_at_round.last().copied().unwrap_or_default();
                (result.last_over_first(), last_log)
            })
        };
        findings.ingest_decay = decay(Rung::Ingest);
        findings.serve_decay = decay(Rung::Serve);
        findings.serve_p99_ms = self
            .find(Rung::Serve)
            .map(|serve| serve.result.p99_ms.median());
    }
}

/// A log of `events` events at `url`, rebuilt; returns its size and the raw read of its rows.
async fn prepared_log(url: &str, events: usize) -> anyhow::Result<(i64, u64, f64)> {
    let store = Store::connect(url).await?;
    store.migrate().await?;
    let filled = rebuild::fill_log(&store, events, 77).await?;
    let (rows, read_time) = rebuild::raw_read(&store, url).await?;
    store.close().await;
    Ok((filled.events, rows, rows as f64 / read_time.as_secs_f64()))
}

async fn rebuild_section(
    options: &Options,
    scratch: &std::path::Path,
    postgres: Option<&Scratch>,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    println!(
        "## Rebuild of a log of {} events (all their calls' events, arrivals shuffled in \
         windows of 32, 5% delivered twice); then one projector worker folding every call \
         again, every projection out of date\n",
        options.events
    );
    println!(
        "| store | log records | call events | raw read events/s | rebuild s | rebuild CPU s \
         | rebuild events/s | rebuild / raw | rebuild peak RSS MiB | projector s \
         | projector events/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut urls = vec![(
        "SQLite",
        format!("sqlite:{}", scratch.join("large.db").display()),
    )];
    if let Some(postgres) = postgres {
        urls.push(("PostgreSQL", postgres.schema("large").await?));
    }
    for (name, url) in urls {
        let (records, rows, raw_rate) = prepared_log(&url, options.events).await?;
        let rebuilt = rebuild::rebuild(&url, Placement::EveryCore).await?;
        let rate = rows as f64 / rebuilt.took.as_secs_f64();
        let store = Store::connect(&url).await?;
        under_load::disturb_every_projection(&store).await?;
        rebuild::mark_every_call(&store).await?;
        rebuild::vacuum(&store).await?;
        let folding = rebuild::catch_up(&url, &store).await?;
        store.close().await;
        let fold_rate = rows as f64 / folding.as_secs_f64();
        println!(
            "| {name} | {records} | {rows} | {raw_rate:.0} | {:.2} | {:.2} | {rate:.0} | {:.2} \
             | {:.0} | {:.2} | {fold_rate:.0} |",
            rebuilt.took.as_secs_f64(),
            rebuilt.cpu_seconds,
            rate / raw_rate,
            rebuilt.peak_rss_mib,
            folding.as_secs_f64()
        );
        if name == "SQLite" {
            findings.rebuild_over_raw = Some(rate / raw_rate);
            findings.rebuild_rate = Some(rate);
            findings.rebuild_rss_mib = Some(rebuilt.peak_rss_mib);
            findings.sqlite_fold_rate = Some(fold_rate);
        } else {
            findings.postgres_fold_rate = Some(fold_rate);
        }
    }
    println!();
    Ok(())
}

async fn late_section(
    options: &Options,
    scratch: &std::path::Path,
    postgres: Option<&Scratch>,
) -> anyhow::Result<()> {
    println!(
        "## One late event: from its 200 to the re-folded call visible at GET /v1/calls/{{id}}, \
         under callfold serve ({} probes, ms)\n",
        options.probes
    );
    println!("| store | log records | median ms | spread | max ms |");
    println!("|---|---|---|---|---|");
    let mut logs = Vec::new();
    for (size_name, size) in [("small", options.small_log), ("large", options.events)] {
        logs.push((
            "SQLite",
            size,
            format!(
                "sqlite:{}",
                scratch.join(format!("late-{size_name}.db")).display()
            ),
        ));
        if let Some(postgres) = postgres {
            let name = format!("late_{size_name}");
            logs.push(("PostgreSQL", size, postgres.schema(&name).await?));
        }
    }
    for (name, size, url) in logs {
        let (records, _, _) = prepared_log(&url, size).await?;
        let server = start_callfold(&url, &[]).await?;
        let store = Store::connect(&url).await?;
        late::wait_until_folded(&store).await?;
        rebuild::vacuum(&store).await?;
        let costs: Rounds = late::late_event_costs(&server, &store, options.probes).await?;
        println!(
            "| {name} | {records} | {:.2} | ±{:.0}% | {:.2} |",
            costs.median(),
            costs.spread() * 100.0,
            costs.max()
        );
        store.close().await;
    }
    println!();
    Ok(())
}

async fn rebuild_under_load_section(
    options: &Options,
    scratch: &std::path::Path,
    postgres: Option<&Scratch>,
) -> anyhow::Result<()> {
    println!(
        "## Acknowledgements of {} deliveries/s to callfold serve over a log of {} events: \
         {} s without a rebuild, during a rebuild that changes nothing, and during one that \
         rewrites every projection\n",
        options.rate, options.events, options.baseline_secs
    );
    println!(
        "| store | window | seconds | deliveries | p50 ms | p99 ms | max ms | non-2xx | 503 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut urls = vec![(
        "SQLite",
        format!("sqlite:{}", scratch.join("under-load.db").display()),
    )];
    if let Some(postgres) = postgres {
        urls.push(("PostgreSQL", postgres.schema("under_load").await?));
    }
    let mut failure_kinds = Vec::new();
    for (name, url) in urls {
        let store = Store::connect(&url).await?;
        store.migrate().await?;
        rebuild::fill_log(&store, options.events, 91).await?;
        let server = start_callfold(&url, &[]).await?;
        late::wait_until_folded(&store).await?;
        rebuild::vacuum(&store).await?;
        let stream = under_load::SteadyStream::start(&server, options.rate, 50_000);
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(options.baseline_secs)).await;
        let mut windows = vec![("no rebuild", started, Instant::now())];
        let from = Instant::now();
        rebuild::rebuild(&url, Placement::ServerCore).await?;
        windows.push(("rebuild, nothing changed", from, Instant::now()));
        under_load::disturb_every_projection(&store).await?;
        rebuild::vacuum(&store).await?;
        let from = Instant::now();
        rebuild::rebuild(&url, Placement::ServerCore).await?;
        windows.push(("rebuild, every projection rewritten", from, Instant::now()));
        let sent = stream.stop().await;
        for (window, from, until) in windows {
            let figures = under_load::WindowFigures::of(&sent, from, until);
            failure_kinds.extend(figures.failures.iter().map(|(label, (count, detail))| {
                format!("- {name}, {window}: {count} `{label}`, the first: {detail}")
            }));
            println!(
                "| {name} | {window} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {} | {} |",
                (until - from).as_secs_f64(),
                figures.deliveries,
                figures.p50_ms,
                figures.p99_ms,
                figures.max_ms,
                figures.not_2xx(),
                figures.answers_503
            );
        }
        store.close().await;
        drop(server);
    }
    if !failure_kinds.is_empty() {
        println!(
            "\nAnswers other than 2xx, by kind:\n\n{}",
            failure_kinds.join("\n")
        );
    }
    println!();
    Ok(())
}

async fn reads_section(options: &Options, scratch: &std::path::Path) -> anyhow::Result<()> {
    let load = reads::ReadLoad {
        rate: options.rate,
        phase: std::time::Duration::from_secs(options.phase_seconds),
        read_loops: options.read_loops,
    };
    let url = format!("sqlite:{}", scratch.join("reads.db").display());
    let (server, records) = reads::prepare(&url, options.events).await?;
    println!(
        "## Reads under load: callfold serve on a SQLite log of {records} records, {} \
         deliveries/s; {} rounds of {} s without reads, then as long with {} loops requesting \
         /status and /v1/stats\n",
        load.rate, options.rounds, options.phase_seconds, load.read_loops
    );
    println!("| phase | acknowledgements | p50 ms | p99 ms | max ms | non-200 | reads/s |");
    println!("|---|---|---|---|---|---|---|");
    // Phases alternate, so that a change in the machine's other load touches both alike.
    let (mut quiet, mut busy) = (reads::Phase::empty(), reads::Phase::empty());
    for round in 0..options.rounds as u64 {
        quiet.extend(reads::phase(&server, load, false, 5_000 + 2 * round).await?);
        busy.extend(reads::phase(&server, load, true, 5_001 + 2 * round).await?);
    }
    for (name, phase) in [("no reads", &quiet), ("reads in loops", &busy)] {
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {} | {:.0} |",
            phase.report.answers.len(),
            phase.ack_ms(0.5),
            phase.ack_ms(0.99),
            phase.ack_ms(1.0),
            phase.not_ok(),
            phase.reads_per_second()
        );
    }
    println!(
        "\nAcknowledgement p99 with reads / without: {:.2}\n",
        busy.ack_ms(0.99) / quiet.ack_ms(0.99)
    );
    Ok(())
}

//! The command line: every subcommand and option, each option also readable from the
//! environment, and the service settings they give. Parsing only; `main` decides what to run.
//! The defaults of the service's options are read from `Settings::default()`, their one source.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use callfold_projector::ListParams;
use callfold_service::{
    ConnectionLimits, ProjectorSettings, ReceiverSettings, Roles, Settings, TlsFiles,
};
use callfold_store::{MAX_BODY_BYTES, PageQuery, PoolLimits};

use clap::{Args, Parser, Subcommand};

use crate::address::parse_listen_address;

/// The service's defaults, which the options below show and fall back on.
static DEFAULTS: LazyLock<Settings> = LazyLock::new(Settings::default);

/// `duration` in whole milliseconds, as the options take it.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// callfold turns Allo's signed webhooks into trustworthy per-call state.
///
/// The receiver also needs CALLFOLD_WEBHOOK_SECRETS: the whsec_... signing secret(s) from
/// Allo's webhook settings, several separated by spaces or commas during a rotation. It is read
/// from the environment only, never from the command line.
#[derive(Debug, Parser)]
#[command(name = "callfold", version, about, long_about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,

    /// The configuration file (default: ./callfold.toml when it exists). Its keys are the
    /// options' names; the environment and the command line override it.
    #[arg(long, env = "CALLFOLD_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// How log lines are written to stderr: text, or JSON (one object per line).
    #[arg(
        long,
        env = "CALLFOLD_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

/// The shape of log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Service(ServiceCommand),
    /// Re-fold projections from the log (all calls, or one), then exit. Safe while the
    /// services run: queries keep answering from the old projections until the swap.
    Rebuild {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Rebuild only this call.
        #[arg(long)]
        call: Option<String>,
    },
    /// Query calls, as the /v1 API does; JSON on stdout.
    Calls {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(subcommand)]
        query: CallsQuery,
    },
    /// Inspect the records kept but not usable, and re-drive one once a fix makes it usable;
    /// JSON on stdout, as `/v1/quarantine` answers.
    Quarantine {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(subcommand)]
        action: QuarantineAction,
    },
    /// List the call events whose call no linking rule finds, as `/v1/unlinked` does; JSON on
    /// stdout.
    Unlinked {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(subcommand)]
        action: UnlinkedAction,
    },
    /// The database's counts for operators, as `/v1/stats` gives them; JSON on stdout.
    Stats(DatabaseArgs),
    /// Check the configuration (file, environment, options) and print what is in effect.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Apply pending database migrations, then exit.
    Migrate(DatabaseArgs),
    /// Send Allo-like signed traffic to a receiver and report answers, throughput and latency.
    Simulate(SimulateArgs),
}

/// The long-running services, each with every option it takes; `config check` takes the same.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Run everything in one process: the webhook receiver, the projector and the query API.
    Serve {
        #[command(flatten)]
        service: ServiceArgs,
        #[command(flatten)]
        receiver: ReceiverOptions,
        #[command(flatten)]
        projector: ProjectorOptions,
    },
    /// Run the webhook receiver only.
    Ingest {
        #[command(flatten)]
        service: ServiceArgs,
        #[command(flatten)]
        receiver: ReceiverOptions,
    },
    /// Run the projector only, with the query API on --listen.
    Projector {
        #[command(flatten)]
        service: ServiceArgs,
        #[command(flatten)]
        projector: ProjectorOptions,
    },
}

impl ServiceCommand {
    /// The command's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            ServiceCommand::Serve { .. } => "serve",
            ServiceCommand::Ingest { .. } => "ingest",
            ServiceCommand::Projector { .. } => "projector",
        }
    }

    /// The options every service takes.
    pub fn service(&self) -> &ServiceArgs {
        match self {
            ServiceCommand::Serve { service, .. }
            | ServiceCommand::Ingest { service, .. }
            | ServiceCommand::Projector { service, .. } => service,
        }
    }

    /// Whether this service receives webhooks (and so needs the signing secrets).
    pub fn receives(&self) -> bool {
        matches!(
            self,
            ServiceCommand::Serve { .. } | ServiceCommand::Ingest { .. }
        )
    }

    /// The roles this service runs.
    pub fn roles(&self) -> Roles {
        match self {
            ServiceCommand::Serve { .. } => Roles::All,
            ServiceCommand::Ingest { .. } => Roles::Ingest,
            ServiceCommand::Projector { .. } => Roles::Projector,
        }
    }

    /// The settings its options give (the secrets, the token and the rules are added from the
    /// environment and the configuration when it starts).
    pub fn settings(&self) -> Settings {
        match self {
            ServiceCommand::Serve {
                service,
                receiver,
                projector,
            } => service.settings(Some(receiver), Some(projector)),
            ServiceCommand::Ingest { service, receiver } => service.settings(Some(receiver), None),
            ServiceCommand::Projector { service, projector } => {
                service.settings(None, Some(projector))
            }
        }
    }
}

/// The queries of `callfold calls`.
#[derive(Debug, Subcommand)]
pub enum CallsQuery {
    /// One call's state: now, or as of a payload time.
    Show {
        /// The call's id (cll_...).
        id: String,
        /// An RFC 3339 time: fold only the events at or before it.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// One call's events in effective order, late arrivals marked.
    Events {
        /// The call's id (cll_...).
        id: String,
    },
    /// Calls matching every filter given, in id order, with a cursor for the next page.
    List(ListArgs),
}

/// The filters and page of `callfold calls list`, as `GET /v1/calls` takes them.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only calls carrying this tag.
    #[arg(long)]
    tag: Option<String>,
    /// Only calls in this status: ringing, initiated, answered or completed.
    #[arg(long)]
    status: Option<String>,
    /// Only calls whose first event is at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only calls whose first event is before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Most calls to print (1 to 1000, default 100).
    #[arg(long)]
    limit: Option<String>,
    /// The `next` cursor printed by the previous page.
    #[arg(long)]
    after: Option<String>,
}

impl ListArgs {
    /// The parameters as the query API receives them, to be parsed alike.
    pub fn params(self) -> ListParams {
        let Self {
            tag,
            status,
            since,
            until,
            limit,
            after,
        } = self;
        ListParams {
            tag,
            status,
            since,
            until,
            limit,
            after,
        }
    }
}

/// The actions of `callfold config`.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate every setting a service would run with (`config check serve|ingest|projector`
    /// followed by that service's options; `serve` when none is named): the options, the
    /// linking rules, the precedence graph, the TLS files and, where it receives webhooks, the
    /// secrets; and print what is in effect (secrets as a count only, the API token as set or
    /// not). Exits non-zero on any problem.
    Check {
        /// The service to check, with its options.
        #[command(subcommand)]
        service: Option<ServiceCommand>,
    },
}

/// The actions of `callfold unlinked`.
#[derive(Debug, Subcommand)]
pub enum UnlinkedAction {
    /// Unlinked call events in the order they were committed, each with its position.
    List(PageArgs),
}

/// The actions of `callfold quarantine`.
#[derive(Debug, Subcommand)]
pub enum QuarantineAction {
    /// Quarantined records in the order they were committed, each with its position, reason
    /// and whether it was re-driven.
    List(PageArgs),
    /// One record of the log by seq, kept or not (the status page names it for each event):
    /// reason (none when usable), headers' values and the raw body.
    Show {
        /// The record's seq.
        seq: i64,
    },
    /// Read a quarantined or unlinked record again with the current rules and, if it is now
    /// usable, append it as `redrive:SEQ` (idempotent: a second re-drive changes nothing).
    Redrive {
        /// The record's seq.
        seq: i64,
    },
}

/// The page of a list of kept records, as `GET /v1/quarantine` takes it.
#[derive(Debug, Args)]
pub struct PageArgs {
    /// Most records to print (1 to 1000, default 100).
    #[arg(long)]
    limit: Option<String>,
    /// The `next` position printed by the previous page.
    #[arg(long)]
    after: Option<String>,
}

impl PageArgs {
    /// The parameters as the query API receives them, to be parsed alike.
    pub fn query(self) -> PageQuery {
        PageQuery {
            limit: self.limit,
            after: self.after,
        }
    }
}

/// Where the event log lives.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// sqlite:PATH or postgres://USER@HOST:PORT/DB. The services and `migrate` create and
    /// migrate it; every other command needs it to exist and be migrated.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite:callfold.db",
        global = true
    )]
    pub database_url: String,

    /// Size of each database connection pool: on PostgreSQL the pool for writes and the pool
    /// for reads have this many each; on SQLite it is the read pool, beside the one connection
    /// that writes.
    #[arg(long, env = "CALLFOLD_DB_MAX_CONNECTIONS", default_value_t = 8, global = true,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub db_max_connections: u32,

    /// How long, in milliseconds, a request waits for a database connection before the
    /// database counts as unavailable (the receiver then answers 503).
    #[arg(
        long,
        env = "CALLFOLD_DB_ACQUIRE_TIMEOUT_MS",
        default_value_t = 5000,
        global = true
    )]
    pub db_acquire_timeout_ms: u64,

    /// Longest a statement may run, in milliseconds (PostgreSQL statement_timeout, and
    /// idle_in_transaction_session_timeout, so at least 1: 0 would let a transaction whose
    /// client vanished hold its locks for ever; on SQLite, longest wait for another process's
    /// write lock).
    #[arg(long, env = "CALLFOLD_DB_STATEMENT_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub db_statement_timeout_ms: u64,

    /// Longest wait, in milliseconds, for the database to commit an append (a batch of
    /// deliveries, or a re-drive) and for /readyz's check. Past it the waiting deliveries are
    /// answered 503 with Retry-After, the connection is closed, and /readyz turns 503: the
    /// bound on a database that stops answering without closing the connection. Keep it
    /// under a third of Allo's 20 s delivery timeout (a delivery may wait for room in a full
    /// queue, then for the commit before its own).
    #[arg(long, env = "CALLFOLD_COMMIT_TIMEOUT_MS",
          default_value_t = millis(DEFAULTS.commit_timeout),
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub commit_timeout_ms: u64,
}

impl DatabaseArgs {
    /// The pool limits these options ask for.
    pub fn pool_limits(&self) -> PoolLimits {
        PoolLimits {
            max_connections: self.db_max_connections,
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
            statement_timeout: Duration::from_millis(self.db_statement_timeout_ms),
        }
    }

    /// The deadline of a commit; see `--commit-timeout-ms`.
    pub fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.commit_timeout_ms)
    }
}

/// What every long-running service needs: its listeners and a database.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// Address and port to listen on (port 0 picks a free one): an IP address, `[::1]:PORT`,
    /// `localhost:PORT`, or `:PORT` for every interface. Without --admin-listen it serves every
    /// route; with it, only the webhook endpoint.
    #[arg(long, env = "CALLFOLD_LISTEN", default_value = "127.0.0.1:8080",
          value_parser = parse_listen_address)]
    pub listen: SocketAddr,

    /// A second, private listener for the query API, /metrics, /healthz and /readyz, so that
    /// --listen can face the internet with the webhook endpoint alone. Plain HTTP: bind it to
    /// a private address.
    #[arg(long, env = "CALLFOLD_ADMIN_LISTEN", value_parser = parse_listen_address)]
    pub admin_listen: Option<SocketAddr>,

    /// Serve the query API, the quarantine, /status and /metrics without CALLFOLD_API_TOKEN on
    /// an address other than loopback (or, for --admin-listen, other than a private one). By
    /// default such a service refuses to start; use this only when the network in front
    /// already restricts who can reach it.
    #[arg(long, env = "CALLFOLD_ALLOW_PUBLIC_API")]
    pub allow_public_api: bool,

    /// PEM certificate chain (leaf first) to serve --listen over HTTPS. Reloaded, with the
    /// key, on SIGHUP; open connections keep the certificate they started with.
    #[arg(long, env = "CALLFOLD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "CALLFOLD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Most connections open at once on each listener. At the cap a new connection takes the
    /// place of the one idle the longest (never one with a request in flight); it is closed as
    /// it arrives only when every open connection has a request in flight.
    #[arg(long, env = "CALLFOLD_MAX_CONNECTIONS",
          default_value_t = DEFAULTS.connections.max_connections as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Largest request line plus headers, in bytes; larger is answered 431.
    #[arg(long, env = "CALLFOLD_MAX_HEADER_BYTES",
          default_value_t = DEFAULTS.connections.max_header_bytes as u32,
          value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_header_bytes: u32,

    /// Longest time, in milliseconds, for a new connection's first byte (of its request, or of
    /// its TLS handshake) to arrive; a connection that stays silent is closed.
    #[arg(long, env = "CALLFOLD_FIRST_BYTE_TIMEOUT_MS",
          default_value_t = millis(DEFAULTS.connections.first_byte_timeout),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub first_byte_timeout_ms: u64,

    /// Longest time, in milliseconds, for a request's headers (from their first byte) or a TLS
    /// handshake to arrive; a slower connection is closed.
    #[arg(long, env = "CALLFOLD_HEADER_READ_TIMEOUT_MS",
          default_value_t = millis(DEFAULTS.connections.header_read_timeout),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,

    /// Longest time, in milliseconds, that a kept-alive connection may stay idle between a
    /// response and the next request; then it is closed. Keep it longer than the idle timeout
    /// of whatever sends to callfold, so that the sender closes first.
    #[arg(long, env = "CALLFOLD_KEEP_ALIVE_TIMEOUT_MS",
          default_value_t = millis(DEFAULTS.connections.keep_alive_timeout),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_alive_timeout_ms: u64,

    /// Longest time, in milliseconds, that a shutdown (SIGTERM, SIGINT) waits for requests in
    /// flight; then the connections still open are closed, the appends already accepted are
    /// committed, and the projector's batch and the database pools get at most as long again
    /// (reads on a silent database never end). Below the 30 s after which supervisors usually
    /// kill.
    #[arg(long, env = "CALLFOLD_SHUTDOWN_TIMEOUT_MS",
          default_value_t = millis(DEFAULTS.connections.shutdown_timeout),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub shutdown_timeout_ms: u64,

    /// Once listening, write the addresses bound (JSON: `listen`, `admin_listen`, `https`) to
    /// this file, replacing it whole: how a supervisor or a test learns the port picked for
    /// port 0.
    #[arg(long, env = "CALLFOLD_ADDRESS_FILE")]
    pub address_file: Option<PathBuf>,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

impl ServiceArgs {
    /// The settings of an app with these options, `receiver` and `projector` (each at its
    /// defaults when absent), without the secrets and the rules, which come from the
    /// environment and the configuration file.
    pub fn settings(
        &self,
        receiver: Option<&ReceiverOptions>,
        projector: Option<&ProjectorOptions>,
    ) -> Settings {
        let defaults = Settings::default();
        Settings {
            connections: self.connection_limits(),
            tls: self.tls_files(),
            allow_public_api: self.allow_public_api,
            commit_timeout: self.database.commit_timeout(),
            receiver: receiver.map_or(defaults.receiver, ReceiverOptions::settings),
            projector: projector.map_or(defaults.projector, ProjectorOptions::settings),
            ..defaults
        }
    }

    /// The limits these options put on every connection.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_connections as usize,
            max_header_bytes: self.max_header_bytes as usize,
            first_byte_timeout: Duration::from_millis(self.first_byte_timeout_ms),
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            keep_alive_timeout: Duration::from_millis(self.keep_alive_timeout_ms),
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
        }
    }

    /// The certificate files of --listen, when HTTPS is asked for.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        let (cert, key) = (self.tls_cert.clone()?, self.tls_key.clone()?);
        Some(TlsFiles { cert, key })
    }
}

/// Options of the webhook receiver.
#[derive(Debug, Args)]
pub struct ReceiverOptions {
    /// Largest accepted distance, in seconds, between webhook-timestamp and this clock.
    #[arg(long, env = "CALLFOLD_TOLERANCE", default_value_t = DEFAULTS.receiver.tolerance_secs)]
    pub tolerance: u64,

    /// Largest accepted body, in bytes (inclusive); at most 268435456 (256 MiB), the largest
    /// body the store takes.
    #[arg(long, env = "CALLFOLD_MAX_BODY", default_value_t = DEFAULTS.receiver.max_body,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_BODY_BYTES as u64))]
    pub max_body: usize,

    /// Longest time, in milliseconds, for a delivery's body to arrive once its headers have;
    /// a slower sender is answered 408.
    #[arg(long, env = "CALLFOLD_BODY_READ_TIMEOUT_MS",
          default_value_t = millis(DEFAULTS.receiver.body_read_timeout),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout_ms: u64,

    /// Deliveries that may wait for the next commit; past it a delivery waits for room at most
    /// the commit timeout, then is answered 503 (with Retry-After). Keep it no larger than
    /// --commit-batch, or the wait of those accepted grows by a commit timeout per batch.
    #[arg(long, env = "CALLFOLD_COMMIT_QUEUE",
          default_value_t = DEFAULTS.receiver.commit_queue as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub commit_queue: u32,

    /// Most deliveries committed in one transaction.
    #[arg(long, env = "CALLFOLD_COMMIT_BATCH",
          default_value_t = DEFAULTS.receiver.commit_batch as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub commit_batch: u32,
}

impl ReceiverOptions {
    /// The receiver's settings these options give.
    pub fn settings(&self) -> ReceiverSettings {
        ReceiverSettings {
            tolerance_secs: self.tolerance,
            max_body: self.max_body,
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            commit_queue: self.commit_queue as usize,
            commit_batch: self.commit_batch as usize,
        }
    }
}

/// Options of the projector.
#[derive(Debug, Args)]
pub struct ProjectorOptions {
    /// Most calls a worker claims and folds in one transaction.
    #[arg(long, env = "CALLFOLD_PROJECTOR_BATCH", default_value_t = DEFAULTS.projector.batch,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub projector_batch: i64,

    /// How long, in milliseconds, a worker's claim on calls lasts, by the database's clock: a
    /// worker renews it every third of it while it folds; if the worker dies, other workers
    /// take its calls over after this long.
    #[arg(long, env = "CALLFOLD_CLAIM_LEASE_MS",
          default_value_t = millis(DEFAULTS.projector.claim_lease),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub claim_lease_ms: u64,

    /// Least time, in milliseconds, between the starts of two batches of a worker that has
    /// caught up: under a steady stream of appends, calls gather into larger batches. An
    /// append after a quiet spell is folded at once.
    #[arg(long, env = "CALLFOLD_FOLD_INTERVAL_MS",
          default_value_t = millis(DEFAULTS.projector.fold_interval))]
    pub fold_interval_ms: u64,

    /// How often, in milliseconds, the projector polls the fold queue when no append wakes it
    /// (an append in this process, or on PostgreSQL in any process, wakes it at once).
    #[arg(long, env = "CALLFOLD_POLL_INTERVAL_MS",
          default_value_t = millis(DEFAULTS.projector.poll_interval),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub poll_interval_ms: u64,
}

impl ProjectorOptions {
    /// The projector's settings these options give.
    pub fn settings(&self) -> ProjectorSettings {
        ProjectorSettings {
            batch: self.projector_batch,
            claim_lease: Duration::from_millis(self.claim_lease_ms),
            fold_interval: Duration::from_millis(self.fold_interval_ms),
            poll_interval: Duration::from_millis(self.poll_interval_ms),
        }
    }
}

/// Options of the traffic simulator.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The receiver's webhook URL; several (repeated, or separated by commas) to spread the
    /// deliveries over several receivers, each duplicate going to another one than its
    /// original.
    #[arg(
        long = "url",
        env = "CALLFOLD_SIMULATE_URL",
        default_value = "http://127.0.0.1:8080/webhooks/allo",
        value_delimiter = ','
    )]
    pub urls: Vec<String>,

    /// Calls to invent (about five events each).
    #[arg(long, default_value_t = 200)]
    pub calls: usize,

    /// Connections sending at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Fraction of messages sent twice with the same webhook-id, 0.0 to 1.0.
    #[arg(long, default_value_t = 0.1)]
    pub duplicates: f64,

    /// Send in random order rather than in payload-time order.
    #[arg(long)]
    pub shuffle: bool,

    /// Seed of the invented traffic, duplicates and shuffle.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Accept any certificate over HTTPS, a self-signed one included (test setups only).
    #[arg(long)]
    pub insecure: bool,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// Parses `callfold serve` alone, with no environment variable of its options set.
    fn serve_with_no_option() -> Settings {
        let cli = Cli::try_parse_from(["callfold", "serve"]).expect("serve parses");
        let Command::Service(serve @ ServiceCommand::Serve { .. }) = cli.command else {
            unreachable!("parsed as serve")
        };
        serve.settings()
    }

    #[test]
    fn the_command_line_defaults_are_the_settings_defaults() {
        let (parsed, defaults) = (serve_with_no_option(), Settings::default());
        assert_eq!(parsed.connections, defaults.connections);
        assert_eq!(parsed.receiver, defaults.receiver);
        assert_eq!(parsed.projector, defaults.projector);
        assert_eq!(parsed.commit_timeout, defaults.commit_timeout);
        assert_eq!(parsed.allow_public_api, defaults.allow_public_api);
        assert!(parsed.tls.is_none());
    }
}

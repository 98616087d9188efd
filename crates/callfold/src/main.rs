//! The `callfold` executable: reads the command line and the environment, opens the store, and
//! wires the crates into the service asked for. No logic of its own beyond that wiring.

mod address;
mod banner;
mod check;
mod cli;
mod config;
mod database_url;
mod exposure;
mod open;
mod ops;
mod output;
mod rule_validation;

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use callfold_ingest::{
    BodyLimits, CommitQueue, IngestState, LinkingRules, Quarantine, TlsCertificate, Verifier,
    WebhookSecrets,
};
use callfold_projector::{ApiToken, Calls, LiveChanges, Precedence, Projector, parse_time};
use callfold_simulate::SimulateOptions;
use callfold_store::{CallKey, ConfigFingerprint, KeptPosition};
use clap::{CommandFactory, FromArgMatches};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Notify, watch};
use tracing_subscriber::EnvFilter;

use crate::cli::{
    CallsQuery, Cli, Command, ConfigAction, DatabaseArgs, LogFormat, ProjectorOptions,
    QuarantineAction, ReceiverOptions, ServiceArgs, ServiceCommand, SimulateArgs, UnlinkedAction,
};
use crate::config::{Config, REBUILD_ADVICE};
use crate::open::{Access, open_store};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let configured =
        Config::for_args(&args).and_then(|config| Ok((config.apply(Cli::command())?, config)));
    let (command, config) = match configured {
        Ok(configured) => configured,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let matches = command.clone().get_matches_from(&args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    init_tracing(cli.log_format);
    match run(cli, &config, command, &matches).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    cli: Cli,
    config: &Config,
    command: clap::Command,
    matches: &clap::ArgMatches,
) -> anyhow::Result<()> {
    let precedence = config.precedence()?;
    let linking_rules = config.linking_rules()?;
    let configuration = config::fingerprint(&linking_rules, &precedence);
    let rules = (precedence.clone(), linking_rules.clone());
    match cli.command {
        Command::Service(ServiceCommand::Serve {
            service,
            receiver,
            projector,
        }) => run_services(service, Some(receiver), Some(projector), rules).await,
        Command::Service(ServiceCommand::Ingest { service, receiver }) => {
            run_services(service, Some(receiver), None, rules).await
        }
        Command::Service(ServiceCommand::Projector { service, projector }) => {
            run_services(service, None, Some(projector), rules).await
        }
        Command::Rebuild { database, call } => {
            rebuild(database, call, precedence, configuration).await
        }
        Command::Calls { database, query } => query_calls(database, query, precedence).await,
        Command::Stats(args) => stats(args).await,
        Command::Quarantine { database, action } => {
            quarantine(database, action, linking_rules).await
        }
        Command::Unlinked { database, action } => unlinked(database, action).await,
        Command::Config {
            action: ConfigAction::Check { service },
        } => check::run(config, &command, matches, service).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Simulate(args) => simulate(args).await,
    }
}

/// The log filter without `RUST_LOG`: callfold's own lines from info up, the database driver's
/// from warn up (its info lines are the server's notices, such as "relation already exists,
/// skipping", which tell an operator nothing).
const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn";

fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => subscriber.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => subscriber.json().init(),
    }
}

async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    let store = open_store(&args, Access::CreateAndMigrate).await?;
    tracing::info!(backend = store.backend_name(), "migrations applied");
    Ok(())
}

async fn query_calls(
    database: DatabaseArgs,
    query: CallsQuery,
    precedence: Precedence,
) -> anyhow::Result<()> {
    let calls = Calls::new(open_store(&database, Access::Existing).await?, precedence);
    match query {
        CallsQuery::Show { id, as_of } => {
            let as_of = parse_time("as_of", as_of.as_deref())?;
            output::print_json(&calls.show(&id, as_of).await?)
        }
        CallsQuery::Events { id } => output::print_json(&calls.events(&id).await?),
        CallsQuery::List(args) => {
            let (filter, page) = args.params().parse()?;
            output::print_json(&calls.list(&filter, &page).await?)
        }
    }
}

async fn quarantine(
    database: DatabaseArgs,
    action: QuarantineAction,
    linking_rules: LinkingRules,
) -> anyhow::Result<()> {
    let store = open_store(&database, Access::Existing).await?;
    let quarantine = Quarantine::new(store, linking_rules, database.commit_timeout());
    match action {
        QuarantineAction::List(page) => {
            let page = page.query().parse::<KeptPosition>()?;
            output::print_json(&quarantine.list(&page).await?)
        }
        QuarantineAction::Show { seq } => output::print_json(&quarantine.show(seq).await?),
        QuarantineAction::Redrive { seq } => output::print_json(&quarantine.redrive(seq).await?),
    }
}

async fn stats(database: DatabaseArgs) -> anyhow::Result<()> {
    let calls = Calls::new(
        open_store(&database, Access::Existing).await?,
        Precedence::default(),
    );
    output::print_json(&calls.stats().await?)
}

async fn unlinked(database: DatabaseArgs, action: UnlinkedAction) -> anyhow::Result<()> {
    let calls = Calls::new(
        open_store(&database, Access::Existing).await?,
        Precedence::default(),
    );
    let UnlinkedAction::List(page) = action;
    let page = page.query().parse::<KeptPosition>()?;
    output::print_json(&calls.unlinked(&page).await?)
}

/// How long `rebuild --call` holds the call it re-folds.
const REBUILD_CALL_LEASE: Duration = Duration::from_secs(30);

async fn rebuild(
    database: DatabaseArgs,
    call: Option<String>,
    precedence: Precedence,
    configuration: ConfigFingerprint,
) -> anyhow::Result<()> {
    let store = open_store(&database, Access::CreateAndMigrate).await?;
    let projector =
        Projector::new(store, precedence, 1, REBUILD_CALL_LEASE).recording(configuration);
    if let Some(call) = call {
        let found = projector.refold_call(&CallKey::new(call.clone())).await?;
        anyhow::ensure!(found, "the log holds no event of call {call:?}");
        eprintln!("rebuild: call {call} re-folded");
        return Ok(());
    }
    let started = Instant::now();
    let mut reported = started;
    let calls = projector
        .rebuild(|read, log_len| {
            if reported.elapsed() >= Duration::from_secs(1) {
                reported = Instant::now();
                let rate = read as f64 / started.elapsed().as_secs_f64();
                // The log also holds records of no call, so this estimate errs long.
                let eta = (log_len as f64 - read as f64).max(0.0) / rate.max(1.0);
                eprintln!("rebuild: {read} events read, {rate:.0} events/s, ETA {eta:.0}s");
            }
        })
        .await?;
    eprintln!(
        "rebuild: {calls} calls swapped in after {:.1?}",
        started.elapsed()
    );
    Ok(())
}

/// Runs the receiver, the projector, or both, until SIGINT or SIGTERM: every route on
/// --listen, or the webhook endpoint there and the rest on --admin-listen.
///
/// Shutdown runs in this order: the listeners stop accepting and close their idle connections,
/// and live streams end their bodies; requests in flight finish, for at most
/// --shutdown-timeout-ms, after which the connections still open are closed (those requests
/// were not answered, so they are sent again); then the committer commits every append it
/// accepted; then the projector finishes its batch and the pools close, for at most another
/// --shutdown-timeout-ms (a read on a silent database never ends), and the process exits.
async fn run_services(
    service: ServiceArgs,
    receiver: Option<ReceiverOptions>,
    projector: Option<ProjectorOptions>,
    (precedence, linking_rules): (Precedence, LinkingRules),
) -> anyhow::Result<()> {
    let api_token = ApiToken::from_env();
    let (token_set, receives) = (api_token.is_some(), receiver.is_some());
    exposure::check(&service, token_set)?;
    let secrets = receiver
        .as_ref()
        .map(|_| WebhookSecrets::from_env())
        .transpose()?;
    let tls = service
        .tls_files()
        .map(TlsCertificate::load)
        .transpose()
        .context("cannot set up HTTPS")?
        .map(Arc::new);
    let store = open_store(&service.database, Access::CreateAndMigrate).await?;
    let configuration = config::fingerprint(&linking_rules, &precedence);
    match config::other_configuration(&store, &configuration).await {
        Ok(None) => {}
        Ok(Some(other)) => tracing::warn!(
            this_process = %configuration,
            projections_also_folded_with = %other,
            advice = REBUILD_ADVICE,
            "projections were folded with another configuration"
        ),
        Err(error) => tracing::warn!(%error, "cannot compare the configuration with the store's"),
    }
    let metrics = metrics_recorder()?;
    let precedence_for_pages = precedence.clone();
    let (stop, stopped) = watch::channel(false);
    let stopping = stopped.clone();
    let shutdown = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    tokio::spawn(ops::publish_store_stats(store.clone()));
    let appended = Arc::new(Notify::new());
    let mut public = Router::new();
    // The /v1 routes, behind the API token; every service can inspect and re-drive the
    // quarantine.
    let commit_timeout = service.database.commit_timeout();
    let mut v1 = callfold_ingest::quarantine_router(Quarantine::new(
        store.clone(),
        linking_rules.clone(),
        commit_timeout,
    ));

    let mut committer = None;
    let mut commits = None;
    if let (Some(options), Some(secrets)) = (receiver, secrets) {
        let (queue, task) = CommitQueue::start(
            store.clone(),
            options.commit_queue as usize,
            options.commit_batch as usize,
            commit_timeout,
            Arc::clone(&appended),
        );
        committer = Some(task);
        commits = Some(queue.health());
        let state = IngestState::new(
            Verifier::new(secrets, options.tolerance),
            linking_rules,
            queue,
            BodyLimits {
                max_bytes: options.max_body,
                read_timeout: Duration::from_millis(options.body_read_timeout_ms),
            },
        );
        v1 = v1.merge(callfold_ingest::rejections_router(state.rejections()));
        public = public.merge(callfold_ingest::router(state));
    }
    let mut projector_task = None;
    if let Some(options) = projector {
        let projector = Projector::new(
            store.clone(),
            precedence.clone(),
            options.projector_batch,
            Duration::from_millis(options.claim_lease_ms),
        )
        .recording(configuration.clone());
        let poll = Duration::from_millis(options.poll_interval_ms);
        let fold_interval = Duration::from_millis(options.fold_interval_ms);
        let live = LiveChanges::new(store.clone(), projector.projected(), poll)
            .ending_on(stopping.clone());
        let (wake, stop_projector) = (Arc::clone(&appended), shutdown());
        let (store_watched, woken) = (store.clone(), Arc::clone(&appended));
        let stop_watching = shutdown();
        tokio::spawn(async move {
            // Listen again after a lost connection; the projector polls meanwhile.
            let watch = async {
                while let Err(error) = store_watched.watch_appends(|| woken.notify_one()).await {
                    tracing::warn!(%error, "not notified of appends; polling, listening again soon");
                    woken.notify_one();
                    tokio::time::sleep(poll).await;
                }
            };
            tokio::select! {
                _ = watch => {}
                _ = stop_watching => {}
            }
        });
        projector_task = Some(tokio::spawn(async move {
            projector
                .run(wake, poll, fold_interval, stop_projector)
                .await
        }));
        v1 = v1.merge(callfold_projector::router(store.clone(), precedence, live));
    }
    let status_page = callfold_projector::status::router(
        store.clone(),
        Calls::new(store.clone(), precedence_for_pages),
    );
    let readiness = ops::Readiness {
        store: store.clone(),
        deadline: commit_timeout,
        commits,
        configuration,
    };
    let private = ops::router(readiness, metrics).merge(callfold_projector::with_token(
        v1.merge(status_page),
        api_token,
    ));

    let limits = service.connection_limits();
    let (mut admin_task, mut admin_bound) = (None, None);
    if let Some(admin_addr) = service.admin_listen {
        let admin = bind(admin_addr).await?;
        admin_bound = Some(admin.local_addr()?);
        tracing::info!(addr = %admin.local_addr()?, "admin listener (query API, metrics, health)");
        let serving = callfold_ingest::serve(admin, private, limits, None, shutdown());
        admin_task = Some(tokio::spawn(serving));
    } else {
        public = public.merge(private);
    }
    // Handled before the first connection, so that a SIGHUP never meets the default action.
    let hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    tokio::spawn(reload_on_hangup(hangups, tls.clone()));
    let listener = bind(service.listen).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        https = tls.is_some(),
        backend = store.backend_name(),
        "listening"
    );
    let listening = banner::Listening {
        public: listener.local_addr()?,
        https: tls.is_some(),
        admin: admin_bound,
        receives,
        projects: projector_task.is_some(),
        token_set,
    };
    banner::Banner::new(&service.database.database_url, listening).log();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    callfold_ingest::serve(listener, public, limits, tls, shutdown()).await;
    if let Some(admin) = admin_task {
        admin.await.context("the admin listener failed")?;
    }
    // The router, and with it every queue handle, is gone: the committer drains and stops
    // (each of its commits has a deadline).
    if let Some(committer) = committer {
        committer.await.context("the committer failed")?;
    }
    // A read on a database that stopped answering without closing (the projector's read of a
    // call's events, a stream's poll cut mid-query) has no deadline of its own: the
    // projector's batch and the closing of the pools get the shutdown timeout, then are
    // abandoned.
    let deadline = tokio::time::Instant::now() + limits.shutdown_timeout;
    let timeout_ms = limits.shutdown_timeout.as_millis();
    if let Some(projector) = projector_task {
        match tokio::time::timeout_at(deadline, projector).await {
            Ok(finished) => finished.context("the projector failed")?,
            Err(_) => tracing::warn!(
                timeout_ms,
                "the projector's batch did not finish within the shutdown timeout; abandoned, \
                 its claims expire with their lease"
            ),
        }
    }
    if tokio::time::timeout_at(deadline, store.close())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_ms,
            "database connections still busy at the shutdown timeout; abandoned, not closed cleanly"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// The Prometheus recorder, with histogram buckets for the histograms callfold records.
fn metrics_recorder() -> anyhow::Result<PrometheusHandle> {
    let buckets: [(&str, &[f64]); 3] = [
        (
            "callfold_ack_seconds",
            &[
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        ),
        (
            "callfold_event_lateness_seconds",
            &[
                0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0,
            ],
        ),
        (
            "callfold_commit_batch_size",
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
        ),
    ];
    let mut builder = PrometheusBuilder::new();
    for (name, bounds) in buckets {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), bounds)?;
    }
    builder
        .install_recorder()
        .context("cannot install the metrics recorder")
}

async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Reads the certificate files again on each SIGHUP; a failed reload keeps the one in use.
/// Without HTTPS there is nothing to reload, and a SIGHUP only says so.
async fn reload_on_hangup(mut hangups: Signal, tls: Option<Arc<TlsCertificate>>) {
    while hangups.recv().await.is_some() {
        let Some(certificate) = &tls else {
            tracing::info!("SIGHUP: no TLS certificate to reload");
            continue;
        };
        match certificate.reload() {
            Ok(()) => tracing::info!("TLS certificate reloaded"),
            Err(error) => {
                tracing::error!(%error, "TLS certificate not reloaded; keeping the one in use")
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        signal(SignalKind::terminate()).expect("installing a SIGTERM handler works on unix");
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down: no new connections, finishing appends in flight");
}

async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let secrets = WebhookSecrets::from_env()?;
    let secret = secrets
        .iter()
        .next()
        .context("at least one secret is configured")?;
    let options = SimulateOptions {
        urls: args.urls,
        calls: args.calls,
        concurrency: args.concurrency as usize,
        duplicates: args.duplicates,
        shuffle: args.shuffle,
        seed: args.seed,
    };
    let report = callfold_simulate::run(&options, secret).await;
    output::print(&report.to_string())
}

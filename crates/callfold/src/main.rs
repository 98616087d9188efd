//! The `callfold` executable: reads the command line and the environment, opens the store, and
//! wires the crates into the service asked for. No logic of its own beyond that wiring.

mod cli;
mod config;
mod exposure;
mod metrics_catalog;
mod ops;

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
use callfold_projector::{ApiToken, Calls, ListFilter, LiveChanges, Precedence, Projector};
use callfold_simulate::SimulateOptions;
use callfold_store::{CallKey, ConfigFingerprint, Store, within};
use clap::{CommandFactory, FromArgMatches};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Notify, watch};
use tracing_subscriber::EnvFilter;

use crate::cli::{
    CallsQuery, Cli, Command, ConfigAction, DatabaseArgs, LogFormat, ProjectorOptions,
    QuarantineAction, ReceiverOptions, ServiceArgs, SimulateArgs,
};
use crate::config::{Config, REBUILD_ADVICE};

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
    match run(cli, &config, command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, config: &Config, command: clap::Command) -> anyhow::Result<()> {
    let precedence = config.precedence()?;
    let linking_rules = config.linking_rules();
    let configuration = config::fingerprint(&linking_rules, &precedence);
    let rules = (precedence.clone(), linking_rules.clone());
    match cli.command {
        Command::Serve {
            service,
            receiver,
            projector,
        } => run_services(service, Some(receiver), Some(projector), rules).await,
        Command::Ingest { service, receiver } => {
            run_services(service, Some(receiver), None, rules).await
        }
        Command::Projector { service, projector } => {
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
        Command::Config {
            action: ConfigAction::Check,
        } => check_config(config, command, configuration).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Simulate(args) => simulate(args).await,
    }
}

fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => subscriber.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => subscriber.json().init(),
    }
}

/// `callfold config check`: every setting `serve` would run with and where it comes from,
/// then the checks that need more than parsing, and whether the store's projections were
/// folded with this configuration.
async fn check_config(
    config: &Config,
    command: clap::Command,
    configuration: ConfigFingerprint,
) -> anyhow::Result<()> {
    let file = config.path.as_ref().map(|p| p.display().to_string());
    println!("configuration file: {}", file.as_deref().unwrap_or("none"));
    let matches = command
        .clone()
        .try_get_matches_from(["callfold", "serve"])
        .context("the settings do not parse")?;
    let serve = matches
        .subcommand_matches("serve")
        .context("serve parses")?;
    let serve_command = command
        .find_subcommand("serve")
        .context("serve is a command")?;
    for arg in serve_command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(raw) = serve.get_raw(id) else {
            continue;
        };
        let value: Vec<String> = raw.map(|v| redact_password(&v.to_string_lossy())).collect();
        let source = match serve.value_source(id) {
            Some(clap::parser::ValueSource::EnvVariable) => "environment",
            _ if config.sets(id) => "file",
            _ => "default",
        };
        println!("{id} = {} ({source})", value.join(","));
    }
    println!("linking rules: {:?}", config.linking_rules());
    println!("precedence graph: acyclic");
    println!("configuration fingerprint: {configuration}");
    let service = ServiceArgs::from_arg_matches(serve)?;
    let database = &service.database;
    let other = within(database.commit_timeout(), async {
        let store =
            Store::connect_existing_with(&database.database_url, database.pool_limits()).await?;
        config::other_configuration(&store, &configuration).await
    })
    .await;
    match other {
        Ok(None) => println!("projections: folded with this configuration"),
        Ok(Some(other)) => {
            println!("warning: {REBUILD_ADVICE} (also folded with: {other})")
        }
        Err(_) => println!("projections: not checked (the store is unreachable or not migrated)"),
    }
    if let Some(files) = service.tls_files() {
        TlsCertificate::load(files).context("cannot set up HTTPS")?;
        println!("TLS certificate and key: usable");
    }
    let secrets = WebhookSecrets::from_env()?;
    println!("webhook secrets: {} configured", secrets.iter().count());
    println!("configuration ok");
    Ok(())
}

/// `url` with the password of its user, if any, replaced by `***`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((user_info, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match user_info.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

async fn open_store(args: &DatabaseArgs) -> anyhow::Result<Store> {
    let store = Store::connect_with(&args.database_url, args.pool_limits())
        .await
        .context("cannot open the database given by --database-url / DATABASE_URL")?;
    store
        .migrate()
        .await
        .context("cannot migrate the database")?;
    Ok(store)
}

async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    let store = open_store(&args).await?;
    tracing::info!(backend = store.backend_name(), "migrations applied");
    Ok(())
}

async fn query_calls(
    database: DatabaseArgs,
    query: CallsQuery,
    precedence: Precedence,
) -> anyhow::Result<()> {
    let calls = Calls::new(open_store(&database).await?, precedence);
    let answer = match query {
        CallsQuery::Show { id, as_of } => calls.show(&id, as_of.as_deref()).await,
        CallsQuery::Events { id } => calls.events(&id).await,
        CallsQuery::List {
            tag,
            status,
            since,
            until,
            limit,
            after,
        } => {
            let filter = ListFilter {
                tag,
                status,
                since,
                until,
                limit,
                after,
            };
            calls.list(&filter).await
        }
    }?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

async fn quarantine(
    database: DatabaseArgs,
    action: QuarantineAction,
    linking_rules: LinkingRules,
) -> anyhow::Result<()> {
    let store = open_store(&database).await?;
    let quarantine = Quarantine::new(store, linking_rules, database.commit_timeout());
    let answer = match action {
        QuarantineAction::List { limit, after } => {
            quarantine.list(limit.as_deref(), after.as_deref()).await
        }
        QuarantineAction::Show { seq } => quarantine.show(seq).await,
        QuarantineAction::Redrive { seq } => quarantine.redrive(seq).await,
    }?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

async fn stats(database: DatabaseArgs) -> anyhow::Result<()> {
    let calls = Calls::new(open_store(&database).await?, Precedence::default());
    println!("{}", serde_json::to_string_pretty(&calls.stats().await?)?);
    Ok(())
}

/// How long `rebuild --call` holds the call it re-folds.
const REBUILD_CALL_LEASE: Duration = Duration::from_secs(30);

async fn rebuild(
    database: DatabaseArgs,
    call: Option<String>,
    precedence: Precedence,
    configuration: ConfigFingerprint,
) -> anyhow::Result<()> {
    let store = open_store(&database).await?;
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
    exposure::check(&service, api_token.is_some())?;
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
    let store = open_store(&service.database).await?;
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
    let metrics = metrics_catalog::MetricsExporter::install(metrics_catalog::Roles {
        receiver: receiver.is_some(),
        projector: projector.is_some(),
    })?;
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
    let mut admin_task = None;
    if let Some(admin_addr) = service.admin_listen {
        let admin = bind(admin_addr).await?;
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

/// `callfold simulate`: prints the report, and fails when any request failed, with the first
/// failure's cause.
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
    let client = callfold_simulate::http_client(options.concurrency, args.insecure)
        .context("cannot set up the HTTP client")?;
    let report = callfold_simulate::run_with(&client, &options, secret).await;
    println!("{report}");
    let failed = report.failures().count();
    if let Some(first) = report.failures().next() {
        anyhow::bail!(
            "{failed} of {} requests failed; the first: {first}",
            report.answers.len()
        );
    }
    Ok(())
}

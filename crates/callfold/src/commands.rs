//! The subcommands: which one runs ([`run`]) and the body of each. `serve`, `ingest` and
//! `projector` build and serve an app; the others open the store, answer once, and exit.

use std::time::{Duration, Instant};

use anyhow::Context;
use callfold_ingest::{LinkingRules, Quarantine, WebhookSecrets};
use callfold_projector::{Calls, Precedence, Projector, parse_time};
use callfold_service::configuration::fingerprint;
use callfold_service::{ApiToken, App, Listeners, Roles, Settings};
use callfold_simulate::SimulateOptions;
use callfold_store::{CallKey, ConfigFingerprint, KeptPosition};
use tokio::signal::unix::{SignalKind, signal};

use crate::banner::{Banner, Listening};
use crate::check;
use crate::cli::{
    CallsQuery, Cli, Command, ConfigAction, DatabaseArgs, QuarantineAction, ServiceCommand,
    SimulateArgs, UnlinkedAction,
};
use crate::config::Config;
use crate::open::{Access, open_store};
use crate::output;
use crate::signals;

/// Runs the subcommand of `cli`, configured by `config` (`command` is the command line as
/// `config` set its defaults, and `matches` what it parsed, for `config check`).
pub async fn run(
    cli: Cli,
    config: &Config,
    command: clap::Command,
    matches: &clap::ArgMatches,
) -> anyhow::Result<()> {
    let precedence = config.precedence()?;
    let linking_rules = config.linking_rules()?;
    let configuration = fingerprint(&linking_rules, &precedence);
    match cli.command {
        Command::Service(service) => serve(service, (precedence, linking_rules)).await,
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

/// Runs the app of `service` (the secrets, the token and the rules added from the
/// environment and the configuration) until SIGINT or SIGTERM: every route on --listen, or
/// the webhook endpoint there and the rest on --admin-listen. See `App::serve` for the order
/// of the shutdown.
pub async fn serve(
    service: ServiceCommand,
    (precedence, linking_rules): (Precedence, LinkingRules),
) -> anyhow::Result<()> {
    let (roles, args) = (service.roles(), service.service());
    let settings = Settings {
        api_token: ApiToken::from_env(),
        precedence,
        linking_rules,
        ..service.settings()
    };
    let listeners = Listeners::bind(args.listen, args.admin_listen, &settings).await?;
    let settings = Settings {
        webhook_secrets: service
            .receives()
            .then(WebhookSecrets::from_env)
            .transpose()?,
        ..settings
    };
    let store = open_store(&args.database, Access::CreateAndMigrate).await?;
    let (https, token_set) = (settings.tls.is_some(), settings.api_token.is_some());
    let app = App::build(roles, settings, store).await?;
    // Handled before the address is told, so that a signal never meets the default action.
    let hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    tokio::spawn(signals::reload_on_hangup(hangups, app.tls_certificate()));
    let shutdown = signals::shutdown_signal()?;
    let bound = listeners.addresses(https)?;
    let listening = Listening {
        public: bound.listen,
        https,
        admin: bound.admin_listen,
        receives: roles != Roles::Projector,
        projects: roles != Roles::Ingest,
        token_set,
    };
    Banner::new(&args.database.database_url, listening).log();
    if let Some(path) = &args.address_file {
        listeners.write_address_file(path, https)?;
    }
    app.serve(listeners, shutdown).await
}

pub async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    let store = open_store(&args, Access::CreateAndMigrate).await?;
    tracing::info!(backend = store.backend_name(), "migrations applied");
    Ok(())
}

pub async fn query_calls(
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

pub async fn quarantine(
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

/// The calls of the store `database` names, which must exist; only counts and records are
/// read, so the precedence is the default.
async fn existing_calls(database: &DatabaseArgs) -> anyhow::Result<Calls> {
    let store = open_store(database, Access::Existing).await?;
    Ok(Calls::new(store, Precedence::default()))
}

pub async fn stats(database: DatabaseArgs) -> anyhow::Result<()> {
    output::print_json(&existing_calls(&database).await?.stats().await?)
}

pub async fn unlinked(database: DatabaseArgs, action: UnlinkedAction) -> anyhow::Result<()> {
    let UnlinkedAction::List(page) = action;
    let page = page.query().parse::<KeptPosition>()?;
    output::print_json(&existing_calls(&database).await?.unlinked(&page).await?)
}

/// How long `rebuild --call` holds the call it re-folds.
const REBUILD_CALL_LEASE: Duration = Duration::from_secs(30);

pub async fn rebuild(
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
    let rebuilt = projector
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
        "rebuild: {} calls swapped in after {:.1?}, {} pauses while another process had the database open",
        rebuilt.calls,
        started.elapsed(),
        rebuilt.pauses
    );
    Ok(())
}

/// `callfold simulate`: prints the report, and fails when any request failed, with the first
/// failure's cause.
pub async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
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
    output::print(&report.to_string())?;
    let failed = report.failures().count();
    if let Some(first) = report.failures().next() {
        anyhow::bail!(
            "{failed} of {} requests failed; the first: {first}",
            report.answers.len()
        );
    }
    Ok(())
}

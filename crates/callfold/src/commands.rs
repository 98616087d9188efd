//! The subcommands: which one runs ([`run`]) and the body of each. `serve`, `ingest` and
//! `projector` build and serve an app; the others open the store, answer once, and exit.

use std::time::{Duration, Instant};

use anyhow::Context;
use callfold_ingest::{LinkingRules, Quarantine, WebhookSecrets};
use callfold_projector::{Calls, ListFilter, Precedence, Projector};
use callfold_service::configuration::{REBUILD_ADVICE, fingerprint, other_configuration};
use callfold_service::{ApiToken, App, Listeners, Roles, Settings, TlsCertificate};
use callfold_simulate::SimulateOptions;
use callfold_store::{CallKey, ConfigFingerprint, Store, within};
use clap::FromArgMatches;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{
    CallsQuery, Cli, Command, ConfigAction, DatabaseArgs, QuarantineAction, ServiceArgs,
    SimulateArgs,
};
use crate::config::Config;
use crate::signals;

/// Runs the subcommand of `cli`, configured by `config` (`command` is the command line as
/// `config` set its defaults, for `config check`).
pub async fn run(cli: Cli, config: &Config, command: clap::Command) -> anyhow::Result<()> {
    let precedence = config.precedence()?;
    let linking_rules = config.linking_rules();
    let configuration = fingerprint(&linking_rules, &precedence);
    let rules = (precedence.clone(), linking_rules.clone());
    match cli.command {
        Command::Serve {
            service,
            receiver,
            projector,
        } => {
            let settings = service.settings(Some(&receiver), Some(&projector));
            serve(Roles::All, &service, settings, rules).await
        }
        Command::Ingest { service, receiver } => {
            let settings = service.settings(Some(&receiver), None);
            serve(Roles::Ingest, &service, settings, rules).await
        }
        Command::Projector { service, projector } => {
            let settings = service.settings(None, Some(&projector));
            serve(Roles::Projector, &service, settings, rules).await
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

/// Runs an app of `roles` with `settings` (the secrets, the token and the rules still to be
/// added from the environment) until SIGINT or SIGTERM: every route on --listen, or the
/// webhook endpoint there and the rest on --admin-listen. See `App::serve` for the order of
/// the shutdown.
pub async fn serve(
    roles: Roles,
    service: &ServiceArgs,
    settings: Settings,
    (precedence, linking_rules): (Precedence, LinkingRules),
) -> anyhow::Result<()> {
    let settings = Settings {
        api_token: ApiToken::from_env(),
        precedence,
        linking_rules,
        ..settings
    };
    let listeners = Listeners::bind(service.listen, service.admin_listen, &settings).await?;
    let receives = roles != Roles::Projector;
    let settings = Settings {
        webhook_secrets: receives.then(WebhookSecrets::from_env).transpose()?,
        ..settings
    };
    let store = open_store(&service.database).await?;
    let https = settings.tls.is_some();
    let app = App::build(roles, settings, store).await?;
    // Handled before the address is told, so that a signal never meets the default action.
    let hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    tokio::spawn(signals::reload_on_hangup(hangups, app.tls_certificate()));
    let shutdown = signals::shutdown_signal()?;
    if let Some(path) = &service.address_file {
        listeners.write_address_file(path, https)?;
    }
    app.serve(listeners, shutdown).await
}

/// `callfold config check`: every setting `serve` would run with and where it comes from,
/// then the checks that need more than parsing, and whether the store's projections were
/// folded with this configuration.
pub async fn check_config(
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
        other_configuration(&store, &configuration).await
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

pub async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    let store = open_store(&args).await?;
    tracing::info!(backend = store.backend_name(), "migrations applied");
    Ok(())
}

pub async fn query_calls(
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

pub async fn quarantine(
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

pub async fn stats(database: DatabaseArgs) -> anyhow::Result<()> {
    let calls = Calls::new(open_store(&database).await?, Precedence::default());
    println!("{}", serde_json::to_string_pretty(&calls.stats().await?)?);
    Ok(())
}

/// How long `rebuild --call` holds the call it re-folds.
const REBUILD_CALL_LEASE: Duration = Duration::from_secs(30);

pub async fn rebuild(
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
    let report = callfold_simulate::run(&options, secret).await;
    println!("{report}");
    Ok(())
}

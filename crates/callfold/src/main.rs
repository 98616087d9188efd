//! The `callfold` executable: reads the configuration (command line, environment, file), sets
//! up tracing, and runs the subcommand asked for; `serve`, `ingest` and `projector` open the
//! store, build a `callfold_service::App` and serve it ([`commands`] holds each body).

mod cli;
mod commands;
mod config;
mod signals;

use std::ffi::OsString;
use std::process::ExitCode;

use callfold_service::Roles;
use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, ConfigAction, LogFormat};
use crate::config::Config;

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
    let configuration = callfold_service::configuration::fingerprint(&linking_rules, &precedence);
    let rules = (precedence.clone(), linking_rules.clone());
    match cli.command {
        Command::Serve {
            service,
            receiver,
            projector,
        } => {
            let settings = service.settings(Some(&receiver), Some(&projector));
            commands::serve(Roles::All, &service, settings, rules).await
        }
        Command::Ingest { service, receiver } => {
            let settings = service.settings(Some(&receiver), None);
            commands::serve(Roles::Ingest, &service, settings, rules).await
        }
        Command::Projector { service, projector } => {
            let settings = service.settings(None, Some(&projector));
            commands::serve(Roles::Projector, &service, settings, rules).await
        }
        Command::Rebuild { database, call } => {
            commands::rebuild(database, call, precedence, configuration).await
        }
        Command::Calls { database, query } => {
            commands::query_calls(database, query, precedence).await
        }
        Command::Stats(args) => commands::stats(args).await,
        Command::Quarantine { database, action } => {
            commands::quarantine(database, action, linking_rules).await
        }
        Command::Config {
            action: ConfigAction::Check,
        } => commands::check_config(config, command, configuration).await,
        Command::Migrate(args) => commands::migrate(args).await,
        Command::Simulate(args) => commands::simulate(args).await,
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

//! The `callfold` executable: reads the configuration (command line, environment, file), sets
//! up tracing, and runs the subcommand asked for ([`commands`]): `serve`, `ingest` and
//! `projector` open the store, build a `callfold_service::App` and serve it.

mod address;
mod banner;
mod check;
mod cli;
mod commands;
mod config;
mod database_url;
mod open;
mod output;
mod rule_validation;
mod signals;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, LogFormat};
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
    match commands::run(cli, &config, command, &matches).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
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

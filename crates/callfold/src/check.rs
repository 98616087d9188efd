//! `callfold config check [serve|ingest|projector] [that command's options]`: the
//! configuration the named service would run with (the same options, environment and file),
//! checked as the service checks it at start-up and printed for people: every option and where
//! its value comes from, the listeners, the database (password hidden), whether the API token
//! is set (never its value), the linking rules and the precedence graph as tables, and, for a
//! role that receives webhooks, how many signing secrets there are. Exits non-zero on any
//! problem the service would refuse to start with.

use std::fmt::Write as _;

use anyhow::Context;
use callfold_ingest::WebhookSecrets;
use callfold_service::configuration::{REBUILD_ADVICE, fingerprint, other_configuration};
use callfold_service::{ApiToken, Settings, TlsCertificate, exposure};
use callfold_store::{ConfigFingerprint, within};
use clap::parser::ValueSource;
use clap::{ArgMatches, FromArgMatches};

use crate::cli::{Cli, Command, ConfigAction, ServiceCommand};
use crate::config::Config;
use crate::database_url::{DatabaseLocation, redact_password};
use crate::open::{Access, open_store};
use crate::output;

/// `callfold config check [SERVICE ...]`, whose command line parsed into `matches`: checks
/// and prints the configuration of the service named, or of `serve` when none is.
pub async fn run(
    config: &Config,
    command: &clap::Command,
    matches: &ArgMatches,
    service: Option<ServiceCommand>,
) -> anyhow::Result<()> {
    let (service, matches) = match service {
        Some(service) => (service, matches.clone()),
        None => {
            let defaulted = command
                .clone()
                .try_get_matches_from(["callfold", "config", "check", "serve"])
                .context("the settings do not parse")?;
            let Command::Config {
                action:
                    ConfigAction::Check {
                        service: Some(service),
                    },
            } = Cli::from_arg_matches(&defaulted)?.command
            else {
                anyhow::bail!("`config check serve` parses as a check of serve");
            };
            (service, defaulted)
        }
    };
    let service_matches = matches
        .subcommand_matches("config")
        .and_then(|config| config.subcommand_matches("check"))
        .and_then(|check| check.subcommand_matches(service.name()))
        .context("the checked service has its options")?;
    report(config, &service, service_matches, command).await
}

/// Checks `service`'s configuration (parsed into `matches`, its own matches) and prints it.
async fn report(
    config: &Config,
    service: &ServiceCommand,
    matches: &ArgMatches,
    command: &clap::Command,
) -> anyhow::Result<()> {
    let mut report = options_report(config, service, matches, command)?;
    report.push('\n');
    report.push_str(&access_report(service)?);
    report.push('\n');
    let linking_rules = config.linking_rules()?;
    let precedence = config.precedence()?;
    report.push_str(&rules_report(config, &linking_rules, &precedence)?);
    report.push('\n');
    let configuration = fingerprint(&linking_rules, &precedence);
    writeln!(report, "configuration fingerprint: {configuration}")?;
    report.push_str(&database_report(&service.service().database, &configuration).await);
    report.push_str("configuration ok");
    output::print(&report)
}

/// The configuration file, the service checked, and each of its options (passwords hidden)
/// with where its value comes from: the environment, the command line, the file, or the
/// default.
fn options_report(
    config: &Config,
    service: &ServiceCommand,
    matches: &ArgMatches,
    command: &clap::Command,
) -> anyhow::Result<String> {
    let mut report = String::new();
    let file = config.path.as_ref().map(|p| p.display().to_string());
    writeln!(
        report,
        "configuration file: {}",
        file.as_deref().unwrap_or("none")
    )?;
    writeln!(report, "checked for: callfold {}", service.name())?;
    let arguments = command
        .find_subcommand(service.name())
        .context("every service is a command")?
        .get_arguments();
    for arg in arguments {
        let id = arg.get_id().as_str();
        let Some(raw) = matches.get_raw(id) else {
            continue;
        };
        let value: Vec<String> = raw.map(|v| redact_password(&v.to_string_lossy())).collect();
        let source = match matches.value_source(id) {
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::CommandLine) => "command line",
            _ if config.sets(id) => "file",
            _ => "default",
        };
        writeln!(report, "{id} = {} ({source})", value.join(","))?;
    }
    Ok(report)
}

/// Who can reach `service`, checked as the service checks it: its listeners and what each
/// serves, whether the API token is set (never its value), whether its TLS certificate and
/// key are usable, and how many webhook secrets it has when it receives webhooks.
fn access_report(service: &ServiceCommand) -> anyhow::Result<String> {
    let mut report = String::new();
    let args = service.service();
    let settings = Settings {
        api_token: ApiToken::from_env(),
        ..service.settings()
    };
    let token_set = settings.api_token.is_some();
    exposure::check(args.listen, args.admin_listen, &settings)?;
    match args.admin_listen {
        Some(admin) => {
            writeln!(
                report,
                "webhook listener: {} (the webhook endpoint only)",
                args.listen
            )?;
            writeln!(
                report,
                "admin listener: {admin} (query API, /status, /metrics, health)"
            )?;
        }
        None => writeln!(report, "listener: {} (every route)", args.listen)?,
    }
    let token = if token_set {
        "set (every /v1 and /status request needs it)"
    } else {
        "not set"
    };
    writeln!(report, "API token (CALLFOLD_API_TOKEN): {token}")?;
    if let Some(files) = args.tls_files() {
        TlsCertificate::load(files).context("cannot set up HTTPS")?;
        writeln!(report, "TLS certificate and key: usable")?;
    }
    if service.receives() {
        let secrets = WebhookSecrets::from_env()?;
        writeln!(
            report,
            "webhook secrets: {} configured",
            secrets.iter().count()
        )?;
    } else {
        writeln!(
            report,
            "webhook secrets: not needed (this role receives no webhooks)"
        )?;
    }
    Ok(report)
}

/// The linking rules and the precedence graph as tables, and a note for each topic of the
/// configuration that Allo is not known to send.
fn rules_report(
    config: &Config,
    linking_rules: &callfold_ingest::LinkingRules,
    precedence: &callfold_projector::Precedence,
) -> anyhow::Result<String> {
    let mut report = rules_table(linking_rules);
    report.push('\n');
    report.push_str(&precedence_table(config, precedence));
    for topic in config.unknown_topics() {
        writeln!(
            report,
            "note: `{topic}` is not one of the topics Allo is known to send; fine if Allo added \
             it, otherwise check its spelling"
        )?;
    }
    Ok(report)
}

/// The linking rules as a table: each topic and its pointers, in the order they are tried.
fn rules_table(rules: &callfold_ingest::LinkingRules) -> String {
    let rows: Vec<(&str, String)> = rules
        .rules()
        .into_iter()
        .map(|(topic, pointers)| (topic, pointers.join(", ")))
        .collect();
    let mut table = String::from(
        "linking rules (the first pointer that holds an id gives the call; other topics belong \
         to no call):\n",
    );
    table.push_str(&two_columns(("topic", "pointers"), &rows));
    table
}

/// The precedence graph as a table: each topic's rank (lower first at the same payload time)
/// and the topics it must come before.
fn precedence_table(config: &Config, precedence: &callfold_projector::Precedence) -> String {
    let edges = config.precedence_edges();
    let rows: Vec<(String, String)> = precedence
        .ranked()
        .into_iter()
        .map(|(rank, topic)| {
            let before: Vec<&str> = edges
                .iter()
                .filter(|(from, _)| from == topic)
                .map(|(_, to)| to.as_str())
                .collect();
            (format!("{rank:>4}  {topic}"), before.join(", "))
        })
        .collect();
    let rows: Vec<(&str, String)> = rows.iter().map(|(a, b)| (a.as_str(), b.clone())).collect();
    let mut table = String::from(
        "precedence graph (at the same payload time, lower ranks first; topics not listed come \
         last):\n",
    );
    table.push_str(&two_columns(("rank  topic", "comes before"), &rows));
    table
}

/// `rows` under `header`, the first column padded to its widest cell.
fn two_columns(header: (&str, &str), rows: &[(&str, String)]) -> String {
    let width = rows
        .iter()
        .map(|(first, _)| first.len())
        .chain([header.0.len()])
        .max()
        .unwrap_or(0);
    let line = |first: &str, second: &str| {
        format!("  {first:width$}  {second}").trim_end().to_owned() + "\n"
    };
    let mut table = line(header.0, header.1);
    for (first, second) in rows {
        table.push_str(&line(first, second));
    }
    table
}

/// What the database says: where it is, and whether its projections were folded with this
/// configuration. A database that cannot be checked is a warning, not a failure: the check may
/// run where the database is not reachable, and the services create a missing one.
async fn database_report(
    database: &crate::cli::DatabaseArgs,
    configuration: &ConfigFingerprint,
) -> String {
    let location = DatabaseLocation::parse(&database.database_url)
        .map_or_else(|error| error.to_string(), |location| location.to_string());
    let mut report = format!("database: {location}\n");
    let opened = tokio::time::timeout(
        database.commit_timeout() + database.pool_limits().acquire_timeout,
        open_store(database, Access::Existing),
    )
    .await;
    let store = match opened {
        Ok(Ok(store)) => store,
        Ok(Err(error)) => {
            report.push_str(&format!("warning: database not checked: {error}\n"));
            return report;
        }
        Err(_) => {
            report.push_str("warning: database not checked: it did not answer in time\n");
            return report;
        }
    };
    let other = within(
        database.commit_timeout(),
        other_configuration(&store, configuration),
    )
    .await;
    match other {
        Ok(None) => report.push_str("projections: folded with this configuration\n"),
        Ok(Some(other)) => {
            report.push_str(&format!(
                "warning: {REBUILD_ADVICE} (also folded with: {other})\n"
            ));
        }
        Err(error) => report.push_str(&format!("warning: projections not checked: {error}\n")),
    }
    store.close().await;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_under_their_header() {
        let rows = [
            ("call.completed", "/data/id".to_owned()),
            ("x", String::new()),
        ];
        let table = two_columns(("topic", "pointers"), &rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "  topic           pointers");
        assert_eq!(lines[1], "  call.completed  /data/id");
        assert_eq!(lines[2], "  x");
    }
}

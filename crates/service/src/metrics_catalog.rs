//! Every metric callfold exports, in one catalog: its name, kind, unit, help text and which
//! role exports it; and the recorder built from it, which serves `/metrics` the way Prometheus
//! exporters do: a `# HELP` line on every metric, every counter and gauge of the role present
//! from the start (at zero), `callfold_build_info`, and the process's own metrics (CPU, memory,
//! file descriptors, start time) read at each scrape.
//!
//! The crates record their metrics by name where things happen; a test checks that every name
//! they record is listed here, and that the alert rules and the dashboard under
//! `docs/prometheus/` name only metrics listed here.

use std::sync::Mutex;

use anyhow::Context;
use callfold_ingest::{DELIVERY_OUTCOMES, WAITING_GAUGE};
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::app::Roles;

/// What a metric is, in Prometheus's terms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// Only goes up; its name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution, over these bucket bounds.
    Histogram(&'static [f64]),
}

/// Which processes export a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportedBy {
    /// Every service: `serve`, `ingest` and `projector`.
    EveryRole,
    /// Services that run the receiver: `serve` and `ingest`.
    Receiver,
    /// Services that run a projector worker: `serve` and `projector`.
    Projector,
}

/// One metric of the catalog.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    /// Its name, as Prometheus shows it (histograms add `_bucket`, `_sum` and `_count`).
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// What its values count or measure.
    pub unit: Unit,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Which services export it.
    pub exported_by: ExportedBy,
    /// Its label and every value the label takes, when it has one: each series is present from
    /// the start.
    pub label: Option<(&'static str, &'static [&'static str])>,
}

const fn metric(
    name: &'static str,
    kind: Kind,
    unit: Unit,
    exported_by: ExportedBy,
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        unit,
        help,
        exported_by,
        label: None,
    }
}

use ExportedBy::{EveryRole, Projector, Receiver};
use Kind::{Counter, Gauge, Histogram};

/// The gauge whose `version` label names the running build; its value is always 1.
pub const BUILD_INFO: &str = "callfold_build_info";

/// The running build's version.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every metric callfold exports.
pub const CATALOG: &[Metric] = &[
    Metric {
        label: Some(("version", &[VERSION])),
        ..metric(
            BUILD_INFO,
            Gauge,
            Unit::Count,
            EveryRole,
            "Always 1; the version label names the running callfold build.",
        )
    },
    Metric {
        label: Some(("outcome", &DELIVERY_OUTCOMES)),
        ..metric(
            "callfold_deliveries_total",
            Counter,
            Unit::Count,
            Receiver,
            "Deliveries answered, by outcome: accepted, duplicate, quarantined, or the reason \
             they were refused.",
        )
    },
    metric(
        "callfold_webhook_id_conflicts_total",
        Counter,
        Unit::Count,
        Receiver,
        "Deliveries whose webhook-id was already logged with a different body (the first copy \
         is kept).",
    ),
    metric(
        "callfold_unlinked_events_total",
        Counter,
        Unit::Count,
        Receiver,
        "Call events received that carry no call id the linking rules can find.",
    ),
    metric(
        "callfold_ack_seconds",
        Histogram(&[
            0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]),
        Unit::Seconds,
        Receiver,
        "Time from a delivery's arrival to its answer, whatever the answer.",
    ),
    metric(
        "callfold_commit_batch_size",
        Histogram(&[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        Unit::Count,
        Receiver,
        "Deliveries committed per transaction.",
    ),
    metric(
        WAITING_GAUGE,
        Gauge,
        Unit::Count,
        Receiver,
        "Deliveries verified and waiting for their commit: for room in the commit queue, in \
         it, or in the transaction being committed.",
    ),
    metric(
        "callfold_webhook_clock_skew_seconds",
        Gauge,
        Unit::Seconds,
        Receiver,
        "This clock minus the webhook-timestamp of the last authentic delivery.",
    ),
    metric(
        "callfold_connections_open",
        Gauge,
        Unit::Count,
        EveryRole,
        "Connections open on this process's listeners.",
    ),
    metric(
        "callfold_connections_evicted_total",
        Counter,
        Unit::Count,
        EveryRole,
        "Idle connections closed to admit a new one at --max-connections.",
    ),
    metric(
        "callfold_connections_refused_total",
        Counter,
        Unit::Count,
        EveryRole,
        "New connections refused at --max-connections, every open one having a request in \
         flight.",
    ),
    metric(
        "callfold_calls_folded_total",
        Counter,
        Unit::Count,
        Projector,
        "Calls this process's projector folded.",
    ),
    metric(
        "callfold_events_folded_total",
        Counter,
        Unit::Count,
        Projector,
        "Events this process's projector folded.",
    ),
    metric(
        "callfold_late_events_total",
        Counter,
        Unit::Count,
        Projector,
        "Events folded after an event of the same call with a later payload time.",
    ),
    metric(
        "callfold_claims_lost_total",
        Counter,
        Unit::Count,
        Projector,
        "Claimed calls another worker took over before this one settled them.",
    ),
    metric(
        "callfold_event_lateness_seconds",
        Histogram(&[
            0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0,
        ]),
        Unit::Seconds,
        Projector,
        "How much earlier in payload time a late event is than the latest event of its call.",
    ),
    metric(
        "callfold_projection_lag_calls",
        Gauge,
        Unit::Count,
        EveryRole,
        "Calls whose projection is behind the log.",
    ),
    metric(
        "callfold_projection_lag_seconds",
        Gauge,
        Unit::Seconds,
        EveryRole,
        "How long the longest-waiting call has waited to be folded.",
    ),
    metric(
        "callfold_projection_lag_events",
        Gauge,
        Unit::Count,
        EveryRole,
        "Logged events that the projections do not count yet.",
    ),
    metric(
        "callfold_log_events",
        Gauge,
        Unit::Count,
        EveryRole,
        "Records in the event log.",
    ),
    metric(
        "callfold_quarantined_events",
        Gauge,
        Unit::Count,
        EveryRole,
        "Records kept raw because their authentic body could not be used.",
    ),
    metric(
        "callfold_log_unlinked_events",
        Gauge,
        Unit::Count,
        EveryRole,
        "Logged call events that name no call the linking rules can find.",
    ),
    // The process's own, read at each scrape (the names are metrics-process's).
    metric(
        "process_cpu_seconds_total",
        Counter,
        Unit::Seconds,
        EveryRole,
        "CPU time (user and system) this process has used, in whole seconds.",
    ),
    metric(
        "process_resident_memory_bytes",
        Gauge,
        Unit::Bytes,
        EveryRole,
        "Resident memory of this process.",
    ),
    metric(
        "process_virtual_memory_bytes",
        Gauge,
        Unit::Bytes,
        EveryRole,
        "Virtual memory of this process.",
    ),
    metric(
        "process_virtual_memory_max_bytes",
        Gauge,
        Unit::Bytes,
        EveryRole,
        "Most virtual memory this process may have.",
    ),
    metric(
        "process_open_fds",
        Gauge,
        Unit::Count,
        EveryRole,
        "File descriptors this process has open.",
    ),
    metric(
        "process_max_fds",
        Gauge,
        Unit::Count,
        EveryRole,
        "Most file descriptors this process may open.",
    ),
    metric(
        "process_start_time_seconds",
        Gauge,
        Unit::Seconds,
        EveryRole,
        "When this process started, in seconds since the Unix epoch.",
    ),
    metric(
        "process_threads",
        Gauge,
        Unit::Count,
        EveryRole,
        "Operating-system threads of this process.",
    ),
];

/// Whether an app of `roles` exports `metric`.
fn exports(roles: Roles, metric: &Metric) -> bool {
    match metric.exported_by {
        EveryRole => true,
        Receiver => roles != Roles::Projector,
        Projector => roles != Roles::Ingest,
    }
}

/// The installed recorder: renders `/metrics`, reading the process's metrics first. Cheap to
/// clone.
#[derive(Clone)]
pub struct MetricsExporter {
    recorder: PrometheusHandle,
    process: metrics_process::Collector,
}

impl MetricsExporter {
    /// The process's recorder, installed by the first app with the catalog's histogram buckets
    /// and help texts (a recorder is global to the process: later apps of the same process,
    /// in tests, share it); every counter and gauge `roles` export (each label value of it) is
    /// registered at zero, so that each series exists before anything happens.
    pub fn install(roles: Roles) -> anyhow::Result<Self> {
        static INSTALLED: Mutex<Option<MetricsExporter>> = Mutex::new(None);
        let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        let exporter = match installed.as_ref() {
            Some(exporter) => exporter.clone(),
            None => Self::install_recorder()?,
        };
        *installed = Some(exporter.clone());
        for metric in CATALOG {
            if exports(roles, metric) {
                register_at_zero(metric);
            }
        }
        Ok(exporter)
    }

    fn install_recorder() -> anyhow::Result<Self> {
        let mut builder = PrometheusBuilder::new();
        for metric in CATALOG {
            if let Histogram(bounds) = metric.kind {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(metric.name.to_owned()), bounds)?;
            }
        }
        let recorder = builder
            .install_recorder()
            .context("cannot install the metrics recorder")?;
        CATALOG.iter().for_each(describe);
        metrics::gauge!(BUILD_INFO, "version" => VERSION).set(1.0);
        Ok(Self {
            recorder,
            process: metrics_process::Collector::default(),
        })
    }

    /// The Prometheus text of every metric, the process's read now.
    pub fn render(&self) -> String {
        self.process.collect();
        self.recorder.render()
    }
}

fn describe(metric: &Metric) {
    let (name, unit, help) = (metric.name, metric.unit, metric.help);
    match metric.kind {
        Counter => metrics::describe_counter!(name, unit, help),
        Gauge => metrics::describe_gauge!(name, unit, help),
        Histogram(_) => metrics::describe_histogram!(name, unit, help),
    }
}

/// Creates each series of a counter or gauge without changing its value. Histograms show once
/// they have a sample; the process's metrics, the build information and the store's gauges
/// are set by their own code.
fn register_at_zero(metric: &Metric) {
    let series: Vec<Vec<(&'static str, &'static str)>> = match metric.label {
        None => vec![Vec::new()],
        Some((label, values)) => values.iter().map(|value| vec![(label, *value)]).collect(),
    };
    for labels in series {
        let labels: Vec<metrics::Label> = labels
            .into_iter()
            .map(|(key, value)| metrics::Label::new(key, value))
            .collect();
        match metric.kind {
            Counter => metrics::counter!(metric.name, labels).increment(0),
            Gauge => metrics::gauge!(metric.name, labels).increment(0.0),
            Histogram(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::*;

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// The names under which Prometheus shows the catalog's metrics.
    fn exported_names() -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for metric in CATALOG {
            names.insert(metric.name.to_owned());
            if let Histogram(_) = metric.kind {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{}{suffix}", metric.name));
                }
            }
        }
        names
    }

    /// Every word of `text` that starts with one of `prefixes` (a word being a run of letters,
    /// digits and underscores).
    fn metric_names_in(text: &str, prefixes: &[&str]) -> BTreeSet<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| prefixes.iter().any(|prefix| word.starts_with(prefix)))
            .map(str::to_owned)
            .collect()
    }

    fn rust_files(folder: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(folder).expect("a readable folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                rust_files(&path, found);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                found.push(path);
            }
        }
    }

    #[test]
    fn the_catalog_lists_each_name_once_and_counters_end_in_total() {
        let mut seen = BTreeSet::new();
        for metric in CATALOG {
            assert!(seen.insert(metric.name), "{} listed twice", metric.name);
            assert_eq!(
                metric.kind == Counter,
                metric.name.ends_with("_total"),
                "{}: only counters end in _total",
                metric.name
            );
            assert!(!metric.help.is_empty(), "{} has no help", metric.name);
        }
    }

    /// Each `metrics::counter!`, `gauge!` or `histogram!` of the crates' sources names a metric
    /// of the catalog, of that kind.
    #[test]
    fn every_metric_the_crates_record_is_in_the_catalog() {
        let mut files = Vec::new();
        rust_files(&workspace().join("crates"), &mut files);
        let mut recorded = 0;
        for file in files {
            let source = std::fs::read_to_string(&file).expect("a readable source");
            for (macro_name, kind) in [
                ("counter!(", "counter"),
                ("gauge!(", "gauge"),
                ("histogram!(", "histogram"),
            ] {
                for (at, _) in source.match_indices(macro_name) {
                    let rest = source[at + macro_name.len()..].trim_start();
                    let Some(quoted) = rest.strip_prefix('"') else {
                        continue;
                    };
                    let name = &quoted[..quoted.find('"').expect("a closing quote")];
                    if !name.starts_with("callfold_") {
                        continue;
                    }
                    let listed = CATALOG.iter().find(|metric| metric.name == name);
                    let listed = listed.unwrap_or_else(|| {
                        panic!("{name} ({}) is not in the catalog", file.display())
                    });
                    let listed_kind = match listed.kind {
                        Counter => "counter",
                        Gauge => "gauge",
                        Histogram(_) => "histogram",
                    };
                    assert_eq!(listed_kind, kind, "{name} in {}", file.display());
                    recorded += 1;
                }
            }
        }
        // The scan found the recording sites (it would pass vacuously otherwise).
        assert!(recorded >= 15, "only {recorded} recording sites found");
    }

    /// `promtool check rules` accepts the alert rules (promtool must be installed: README's
    /// test command installs it), and the rules and the dashboard name only metrics that
    /// callfold exports.
    #[test]
    fn the_alert_rules_and_dashboard_are_valid_and_name_exported_metrics() {
        let folder = workspace().join("docs/prometheus");
        let rules = folder.join("alerts.yml");
        let checked = std::process::Command::new("promtool")
            .args(["check", "rules"])
            .arg(&rules)
            .output()
            .unwrap_or_else(|error| {
                panic!(
                    "promtool is required to check {}: {error} (README's test command \
                     installs it: Debian's prometheus package)",
                    rules.display()
                )
            });
        assert!(
            checked.status.success(),
            "promtool check rules failed:\n{}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
        let exported = exported_names();
        for file in ["alerts.yml", "dashboard.json"] {
            let text = std::fs::read_to_string(folder.join(file)).expect("a readable file");
            let named = metric_names_in(&text, &["callfold_", "process_"]);
            assert!(!named.is_empty(), "{file} names no metric");
            let unknown: Vec<&String> = named.difference(&exported).collect();
            assert!(
                unknown.is_empty(),
                "{file} names metrics callfold does not export: {unknown:?}"
            );
        }
    }
}

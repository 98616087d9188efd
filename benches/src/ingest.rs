//! The ingest benchmark: the same pre-signed requests, over the same C connections, against
//! the ceiling, `callfold serve` (SQLite, and PostgreSQL when given) and the peer.
//!
//! Every round sends fresh webhook-ids (a repeated id would be a cheaper duplicate), all
//! signed before the clock starts. One unmeasured warm-up round comes first.

use callfold_ingest::WebhookSecrets;
use callfold_simulate::{SignedDelivery, SimulateOptions, invent_events, sign_deliveries};

use crate::servers::{BENCH_SECRET, Server};
use crate::stats::Rounds;

/// How a target is loaded.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Measured rounds.
    pub rounds: usize,
    /// Requests per round.
    pub requests: usize,
    /// Connections kept busy.
    pub connections: usize,
}

/// What one target did under the load.
#[derive(Debug)]
pub struct IngestResult {
    /// Requests answered per second.
    pub requests_per_second: Rounds,
    /// Median acknowledgement latency, ms.
    pub p50_ms: Rounds,
    /// 99th percentile acknowledgement latency, ms.
    pub p99_ms: Rounds,
    /// Answers other than 200, over every round.
    pub not_ok: usize,
    /// Peak resident memory of the server, MiB.
    pub peak_rss_mib: f64,
}

/// `requests` new deliveries invented from `seed`, signed now.
pub fn signed_deliveries(requests: usize, seed: u64) -> Vec<SignedDelivery> {
    let secrets = WebhookSecrets::parse(BENCH_SECRET).expect("the benchmark secret parses");
    let secret = secrets.iter().next().expect("one secret");
    let now = chrono::Utc::now();
    // Each call produces at least three events.
    let mut events = invent_events(requests / 3 + 1, seed, now);
    events.truncate(requests);
    let options = SimulateOptions {
        urls: Vec::new(),
        calls: 0,
        concurrency: 0,
        duplicates: 0.0,
        shuffle: false,
        seed,
    };
    sign_deliveries(events, secret, now.timestamp(), &options)
}

/// Loads `server` for `load.rounds` rounds (after a warm-up) with requests from seeds
/// `seed..`.
pub async fn measure(server: &Server, load: Load, seed: u64) -> IngestResult {
    let url = [server.webhook_url()];
    let warm_up = signed_deliveries(load.requests / 4 + 1, seed);
    callfold_simulate::send(&url, warm_up, load.connections).await;
    let mut result = IngestResult {
        requests_per_second: Rounds::default(),
        p50_ms: Rounds::default(),
        p99_ms: Rounds::default(),
        not_ok: 0,
        peak_rss_mib: 0.0,
    };
    for round in 0..load.rounds {
        let deliveries = signed_deliveries(load.requests, seed + 1 + round as u64);
        let report = callfold_simulate::send(&url, deliveries, load.connections).await;
        result.requests_per_second.push(report.throughput());
        result
            .p50_ms
            .push(report.latency_quantile(0.5).as_secs_f64() * 1000.0);
        result
            .p99_ms
            .push(report.latency_quantile(0.99).as_secs_f64() * 1000.0);
        result.not_ok += report
            .answers
            .iter()
            .filter(|answer| answer.status != Some(200))
            .count();
    }
    result.peak_rss_mib = server.peak_rss_mib();
    result
}

/// What a server did with `connections` connections, far past its capacity.
#[derive(Debug)]
pub struct Overload {
    /// Connections used.
    pub connections: usize,
    /// Answers by status (`None`: no answer).
    pub answers_503: usize,
    /// Every answer.
    pub answers: usize,
    /// Peak resident memory of the server, MiB, after the overload.
    pub peak_rss_mib: f64,
}

/// One round with `connections` connections.
pub async fn overload(server: &Server, requests: usize, connections: usize, seed: u64) -> Overload {
    let url = [server.webhook_url()];
    let report =
        callfold_simulate::send(&url, signed_deliveries(requests, seed), connections).await;
    Overload {
        connections,
        answers_503: report
            .answers
            .iter()
            .filter(|answer| answer.status == Some(503))
            .count(),
        answers: report.answers.len(),
        peak_rss_mib: server.peak_rss_mib(),
    }
}

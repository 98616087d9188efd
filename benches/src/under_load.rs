//! The rebuild-under-load benchmark: how `callfold serve` acknowledges a steady stream of
//! deliveries while `callfold rebuild` runs over a large log, against the same stream with no
//! rebuild.
//!
//! The stream is open-loop: deliveries leave on a fixed schedule whatever the answers do, so a
//! stall shows in the latency of every delivery sent during it instead of slowing the sender.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callfold_simulate::{Answer, SignedDelivery, deliver};
use callfold_store::Store;

use crate::ingest::signed_deliveries;
use crate::servers::Server;

/// How often the sender releases the deliveries due.
const TICK: Duration = Duration::from_millis(10);
/// Deliveries signed at a time, as the stream needs them (signatures stay fresh).
const SIGNED_AHEAD: usize = 1_000;
/// Longest a stopped stream waits for the answers still due.
const DRAIN: Duration = Duration::from_secs(60);

/// A delivery's answer and when it was sent.
type Sent = (Instant, Answer);

/// A stream of fresh deliveries to one server at a fixed rate, until dropped or stopped.
pub struct SteadyStream {
    sent: Arc<Mutex<Vec<Sent>>>,
    in_flight: Arc<AtomicUsize>,
    sender: tokio::task::JoinHandle<()>,
}

impl SteadyStream {
    /// Starts sending `rate` deliveries per second to `server`, invented from seeds `seed..`.
    pub fn start(server: &Server, rate: f64, seed: u64) -> Self {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let url = server.webhook_url();
        let (answers, waiting) = (Arc::clone(&sent), Arc::clone(&in_flight));
        let sender = tokio::spawn(async move {
            // As many connections as the answers outstanding need.
            let client =
                callfold_simulate::http_client(usize::MAX, false).expect("an HTTP client builds");
            let mut ticks = tokio::time::interval(TICK);
            let started = Instant::now();
            let (mut released, mut batch) = (0u64, 0u64);
            let mut ready: Vec<SignedDelivery> = Vec::new();
            loop {
                ticks.tick().await;
                let due = (started.elapsed().as_secs_f64() * rate) as u64;
                while released < due {
                    if ready.is_empty() {
                        ready = signed_deliveries(SIGNED_AHEAD, seed + batch);
                        ready.reverse();
                        batch += 1;
                    }
                    let delivery = ready.pop().expect("just signed");
                    let (client, url) = (client.clone(), url.clone());
                    let (answers, waiting) = (Arc::clone(&answers), Arc::clone(&waiting));
                    waiting.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let at = Instant::now();
                        let answer = deliver(&client, &url, &delivery).await;
                        answers.lock().expect("not poisoned").push((at, answer));
                        waiting.fetch_sub(1, Ordering::SeqCst);
                    });
                    released += 1;
                }
            }
        });
        Self {
            sent,
            in_flight,
            sender,
        }
    }

    /// Stops sending, waits for the answers still due (at most [`DRAIN`]), and returns every
    /// delivery answered.
    pub async fn stop(self) -> Vec<Sent> {
        self.sender.abort();
        let deadline = Instant::now() + DRAIN;
        while self.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(TICK).await;
        }
        std::mem::take(&mut *self.sent.lock().expect("not poisoned"))
    }
}

/// The acknowledgements of the deliveries sent within one window of time.
#[derive(Debug)]
pub struct WindowFigures {
    /// Deliveries sent in the window.
    pub deliveries: usize,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Highest latency, ms.
    pub max_ms: f64,
    /// Of the answers other than 2xx, the 503s.
    pub answers_503: usize,
    /// Each kind of answer other than 2xx (`http 500`, `error: transport`, ...): how many, and
    /// what the first of them said.
    pub failures: BTreeMap<String, (usize, String)>,
}

impl WindowFigures {
    /// The figures of the deliveries of `sent` sent from `from` until `until`.
    pub fn of(sent: &[Sent], from: Instant, until: Instant) -> Self {
        let window: Vec<&Answer> = sent
            .iter()
            .filter(|(at, _)| *at >= from && *at < until)
            .map(|(_, answer)| answer)
            .collect();
        let mut failures = BTreeMap::new();
        for answer in window.iter().filter(|answer| !is_2xx(answer)) {
            let detail = answer
                .failure
                .as_ref()
                .map(|failure| failure.detail.clone())
                .unwrap_or_default();
            failures
                .entry(answer.label.clone())
                .or_insert((0, detail))
                .0 += 1;
        }
        let mut latencies: Vec<f64> = window
            .iter()
            .map(|answer| answer.latency.as_secs_f64() * 1000.0)
            .collect();
        latencies.sort_by(f64::total_cmp);
        let quantile = |q: f64| {
            let rank = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
            latencies.get(rank).copied().unwrap_or_default()
        };
        Self {
            deliveries: window.len(),
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            max_ms: latencies.last().copied().unwrap_or_default(),
            answers_503: window
                .iter()
                .filter(|answer| answer.status == Some(503))
                .count(),
            failures,
        }
    }

    /// Answers other than 2xx, no answer included: the failures of every kind.
    pub fn not_2xx(&self) -> usize {
        self.failures.values().map(|(count, _)| count).sum()
    }
}

/// Whether `answer` is a 2xx.
fn is_2xx(answer: &Answer) -> bool {
    answer
        .status
        .is_some_and(|status| (200..300).contains(&status))
}

/// Makes every live projection differ from what a rebuild computes (its late-event count), so
/// that the next rebuild rewrites them all, as after a change of the fold code.
pub async fn disturb_every_projection(store: &Store) -> anyhow::Result<()> {
    let sql = "UPDATE call_projections SET late_events = late_events + 1";
    match store {
        Store::Sqlite(pools) => sqlx::query(sql).execute(&pools.writer).await.map(drop)?,
        Store::Postgres(pools) => sqlx::query(sql).execute(&pools.writer).await.map(drop)?,
    }
    Ok(())
}

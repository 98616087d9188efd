//! `callfold simulate`: Allo-like traffic for demos and load tests.
//!
//! Invents calls ([`traffic`]), signs every delivery exactly as a Standard Webhooks sender does,
//! all before the clock starts, then keeps `concurrency` connections busy sending them and
//! reports the answers, the throughput and the latency percentiles. It never reads the store:
//! what it knows is what the receiver answered. A run is also a smoke test: a seed always
//! invents the same bodies (a second run is all duplicates), and each failed request keeps
//! what went wrong ([`failure`]).

pub mod failure;
pub mod traffic;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use callfold_ingest::signature::{WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};
use callfold_ingest::{Secret, sign};
use callfold_store::WebhookId;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

pub use failure::Failure;
pub use traffic::{PAYLOAD_TIMES_END, SimulatedEvent, invent_events};

/// What to send, where, and how.
#[derive(Clone, Debug)]
pub struct SimulateOptions {
    /// The webhook endpoints, e.g. `http://127.0.0.1:8080/webhooks/allo`: one receiver, or
    /// several behind no load balancer. Deliveries go to each in turn, and a duplicate goes to
    /// the one after its original's.
    pub urls: Vec<String>,
    /// How many calls to invent (about five events each).
    pub calls: usize,
    /// How many connections send at once.
    pub concurrency: usize,
    /// The fraction of messages sent a second time with the same webhook-id (0.0 to 1.0).
    pub duplicates: f64,
    /// Send in random order instead of payload-time order.
    pub shuffle: bool,
    /// Seed for the invented traffic, the duplicates and the shuffle.
    pub seed: u64,
}

/// One signed request, ready to send.
#[derive(Clone, Debug)]
pub struct SignedDelivery {
    /// Its `webhook-id`.
    pub webhook_id: String,
    /// Which of the endpoints it goes to, before taking the remainder by their number.
    target: usize,
    webhook_timestamp: String,
    signature: String,
    body: Vec<u8>,
}

/// Signs `events` with `secret` at `timestamp` (Unix seconds), adds the duplicates and orders
/// them as `options` say.
pub fn sign_deliveries(
    events: Vec<SimulatedEvent>,
    secret: &Secret,
    timestamp: i64,
    options: &SimulateOptions,
) -> Vec<SignedDelivery> {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let deliveries: Vec<SignedDelivery> = events
        .into_iter()
        .enumerate()
        .map(|(target, event)| {
            let id = WebhookId::parse(&event.webhook_id).expect("invented ids are valid");
            SignedDelivery {
                target,
                signature: sign(secret, &id, timestamp, &event.body),
                webhook_id: event.webhook_id,
                webhook_timestamp: timestamp.to_string(),
                body: event.body,
            }
        })
        .collect();
    let duplicate_count = (deliveries.len() as f64 * options.duplicates.clamp(0.0, 1.0)) as usize;
    let mut resend = vec![false; deliveries.len()];
    for index in rand::seq::index::sample(&mut rng, deliveries.len(), duplicate_count) {
        resend[index] = true;
    }
    // Each duplicate right after its original, like an impatient retry; shuffled below if asked.
    let mut deliveries: Vec<SignedDelivery> = deliveries
        .into_iter()
        .zip(resend)
        .flat_map(|(delivery, again)| {
            let copy = again.then(|| SignedDelivery {
                target: delivery.target + 1,
                ..delivery.clone()
            });
            std::iter::once(delivery).chain(copy)
        })
        .collect();
    if options.shuffle {
        deliveries.shuffle(&mut rng);
    }
    deliveries
}

/// What one request got back.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The delivery's webhook-id.
    pub webhook_id: String,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// `accepted`, `duplicate`, `quarantined`, `http 503`, `error: ...`.
    pub label: String,
    /// The `seq` of a 200 answer.
    pub seq: Option<i64>,
    /// What went wrong, unless the receiver answered 2xx with a receipt.
    pub failure: Option<Failure>,
    /// Time from sending the request to reading the whole answer.
    pub latency: Duration,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct Report {
    /// Every answer, in no particular order.
    pub answers: Vec<Answer>,
    /// Wall-clock time of the sending phase.
    pub elapsed: Duration,
    /// The id of one invented call, to look up afterwards.
    pub sample_call: Option<String>,
}

impl Report {
    /// How many answers had each label.
    pub fn counts(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for answer in &self.answers {
            *counts.entry(answer.label.as_str()).or_default() += 1;
        }
        counts
    }

    /// The requests that failed (no 2xx receipt), in no particular order.
    pub fn failures(&self) -> impl Iterator<Item = &Failure> {
        self.answers
            .iter()
            .filter_map(|answer| answer.failure.as_ref())
    }

    /// Requests per second over the sending phase.
    pub fn throughput(&self) -> f64 {
        self.answers.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The latency below which `quantile` (0.0 to 1.0) of the answers came back.
    pub fn latency_quantile(&self, quantile: f64) -> Duration {
        let mut latencies: Vec<Duration> = self.answers.iter().map(|a| a.latency).collect();
        latencies.sort_unstable();
        let rank = ((latencies.len() as f64 * quantile).ceil() as usize).saturating_sub(1);
        latencies.get(rank).copied().unwrap_or_default()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sent {} requests in {:.2?}",
            self.answers.len(),
            self.elapsed
        )?;
        for (label, count) in self.counts() {
            writeln!(f, "  {label:<12} {count}")?;
        }
        writeln!(f, "throughput   {:.0} requests/s", self.throughput())?;
        let ms = |q| self.latency_quantile(q).as_secs_f64() * 1000.0;
        write!(
            f,
            "latency ms   p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(1.0)
        )?;
        match &self.sample_call {
            Some(call) => write!(f, "\none call   {call} (GET /v1/calls/{call})"),
            None => Ok(()),
        }
    }
}

/// How long the sender keeps an idle connection: below the receiver's keep-alive timeout (75 s
/// by default), so that the sender closes first and never sends into a connection as the
/// receiver closes it.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client that sends: `concurrency` connections kept per receiver, each for at most
/// [`IDLE_CONNECTION_TIMEOUT`] idle; HTTPS trusting the system's certificate authorities, or,
/// with `accept_invalid_certificates`, any certificate (a self-signed one in a test setup).
pub fn http_client(
    concurrency: usize,
    accept_invalid_certificates: bool,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
        .danger_accept_invalid_certs(accept_invalid_certificates)
        .build()
}

/// Sends `deliveries` to `urls` over `concurrency` connections and collects the answers.
pub async fn send(urls: &[String], deliveries: Vec<SignedDelivery>, concurrency: usize) -> Report {
    let client = http_client(concurrency, false).expect("an HTTP client builds");
    send_with(&client, urls, deliveries, concurrency).await
}

/// [`send`], with `client`.
pub async fn send_with(
    client: &reqwest::Client,
    urls: &[String],
    deliveries: Vec<SignedDelivery>,
    concurrency: usize,
) -> Report {
    let deliveries = Arc::new(deliveries);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let senders: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (client, urls) = (client.clone(), urls.to_vec());
            let (deliveries, next) = (Arc::clone(&deliveries), Arc::clone(&next));
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while let Some(delivery) = deliveries.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let url = &urls[delivery.target % urls.len()];
                    answers.push(deliver(&client, url, delivery).await);
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(deliveries.len());
    for sender in senders {
        answers.extend(sender.await.expect("a sender task does not panic"));
    }
    Report {
        answers,
        elapsed: started.elapsed(),
        sample_call: None,
    }
}

/// Sends `deliveries` to `urls` at a steady `per_second`, each at its turn whether or not the
/// earlier ones are answered (as webhooks arrive), so that a slow answer shows in the latencies
/// instead of slowing the rate down.
pub async fn send_at_rate(
    urls: &[String],
    deliveries: Vec<SignedDelivery>,
    per_second: f64,
) -> Report {
    // As many connections as the answers outstanding need.
    let client = http_client(usize::MAX, false).expect("an HTTP client builds");
    let started = Instant::now();
    let mut turns = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    let mut sending = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        turns.tick().await;
        let (client, url) = (client.clone(), urls[delivery.target % urls.len()].clone());
        sending.push(tokio::spawn(async move {
            deliver(&client, &url, &delivery).await
        }));
    }
    let mut answers = Vec::with_capacity(sending.len());
    for delivery in sending {
        answers.push(delivery.await.expect("a delivery task does not panic"));
    }
    Report {
        answers,
        elapsed: started.elapsed(),
        sample_call: None,
    }
}

/// Sends one delivery to `url` and reads its answer.
pub async fn deliver(client: &reqwest::Client, url: &str, delivery: &SignedDelivery) -> Answer {
    #[derive(serde::Deserialize)]
    struct Receipt {
        status: String,
        seq: i64,
    }
    let started = Instant::now();
    let result = client
        .post(url)
        .header(WEBHOOK_ID, &delivery.webhook_id)
        .header(WEBHOOK_TIMESTAMP, &delivery.webhook_timestamp)
        .header(WEBHOOK_SIGNATURE, &delivery.signature)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(delivery.body.clone())
        .send()
        .await;
    let status = result
        .as_ref()
        .ok()
        .map(|response| response.status().as_u16());
    let (label, seq, failure) = match result {
        Ok(response) => {
            let success = response.status().is_success();
            // Read the whole body, also so that the connection can be reused.
            match response.bytes().await {
                Ok(body) if success => match serde_json::from_slice::<Receipt>(&body) {
                    Ok(receipt) => (receipt.status, Some(receipt.seq), None),
                    Err(_) => (
                        "unreadable 2xx".to_owned(),
                        None,
                        Some(Failure::answered(url, status, &body)),
                    ),
                },
                Ok(body) => (
                    format!("http {}", status.unwrap_or_default()),
                    None,
                    Some(Failure::answered(url, status, &body)),
                ),
                Err(error) => (
                    "error: transport".to_owned(),
                    None,
                    Some(Failure::unanswered(url, &error)),
                ),
            }
        }
        Err(error) => {
            let label = if error.is_connect() {
                "error: connect"
            } else {
                "error: transport"
            };
            (
                label.to_owned(),
                None,
                Some(Failure::unanswered(url, &error)),
            )
        }
    };
    Answer {
        webhook_id: delivery.webhook_id.clone(),
        status,
        label,
        seq,
        failure,
        latency: started.elapsed(),
    }
}

/// Invents, signs and sends the traffic `options` describe. The payload times end at the fixed
/// [`PAYLOAD_TIMES_END`], so that a seed always invents the same bodies; the
/// `webhook-timestamp` is the current time, as the receiver's tolerance demands.
pub async fn run(options: &SimulateOptions, secret: &Secret) -> Report {
    let client = http_client(options.concurrency, false).expect("an HTTP client builds");
    run_with(&client, options, secret).await
}

/// [`run`], with `client`.
pub async fn run_with(
    client: &reqwest::Client,
    options: &SimulateOptions,
    secret: &Secret,
) -> Report {
    let events = invent_events(options.calls, options.seed, PAYLOAD_TIMES_END);
    let sample_call = events.iter().find_map(|event| {
        let envelope: serde_json::Value = serde_json::from_slice(&event.body).ok()?;
        if envelope["topic"] != "call.completed" {
            return None;
        }
        envelope["data"]["id"].as_str().map(str::to_owned)
    });
    let deliveries = sign_deliveries(events, secret, chrono::Utc::now().timestamp(), options);
    Report {
        sample_call,
        ..send_with(client, &options.urls, deliveries, options.concurrency).await
    }
}

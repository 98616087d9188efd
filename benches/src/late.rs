//! The cost of one late event: from the 200 answer to the re-folded projection being visible
//! through the query API, under `callfold serve`.

use std::time::{Duration, Instant};

use callfold_ingest::WebhookSecrets;
use callfold_simulate::SimulateOptions;
use callfold_simulate::traffic::SimulatedEvent;
use callfold_store::Store;

use crate::servers::{BENCH_SECRET, Server};
use crate::stats::Rounds;

/// Time between two probes: longer than the projector's batch window (`--fold-interval-ms`).
const PROBE_SPACING: Duration = Duration::from_millis(100);

/// Waits until the projector has folded every call of `store`.
///
/// Asks whether any mark is left, which reads one row, rather than counting the marks: on a
/// queue of 267,362 calls a PostgreSQL count takes 36 ms, so counting every 50 ms kept most of
/// a core of the server busy, away from the projector being measured.
pub async fn wait_until_folded(store: &Store) -> anyhow::Result<()> {
    const ANY_MARK: &str = "SELECT EXISTS (SELECT 1 FROM calls_to_fold)";
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let waiting: bool = match store {
            Store::Sqlite(pools) => {
                sqlx::query_scalar(ANY_MARK)
                    .fetch_one(&pools.readers)
                    .await?
            }
            Store::Postgres(pools) => {
                sqlx::query_scalar(ANY_MARK)
                    .fetch_one(&pools.readers)
                    .await?
            }
        };
        if !waiting {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the projector never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `probes` late `tag.added` events (payload time long before every call), each to
/// another call of `store` and 100 ms apart, and returns how long after each 200 the tag was
/// visible.
pub async fn late_event_costs(
    server: &Server,
    store: &Store,
    probes: usize,
) -> anyhow::Result<Rounds> {
    let calls = store.list_projections(None, probes as i64).await?;
    anyhow::ensure!(calls.len() == probes, "the log holds too few calls");
    let client = reqwest::Client::new();
    let secrets = WebhookSecrets::parse(BENCH_SECRET)?;
    let secret = secrets.iter().next().expect("one secret");
    let mut costs = Rounds::default();
    for (n, call) in calls.iter().enumerate() {
        let tag = format!("late-probe-{n}");
        let body = serde_json::json!({
            "topic": "tag.added",
            "timestamp": "2001-01-01T00:00:00Z",
            "data": {"call_id": call.call_key.as_str(), "tag": tag},
        });
        let event = SimulatedEvent {
            webhook_id: format!("msg_late_probe_{n}_{}", std::process::id()),
            body: body.to_string().into_bytes(),
        };
        let options = SimulateOptions {
            urls: vec![server.webhook_url()],
            calls: 0,
            concurrency: 1,
            duplicates: 0.0,
            shuffle: false,
            seed: 0,
        };
        let now = chrono::Utc::now().timestamp();
        let delivery = callfold_simulate::sign_deliveries(vec![event], secret, now, &options);
        let report = callfold_simulate::send(&options.urls, delivery, 1).await;
        anyhow::ensure!(
            report.answers.iter().all(|a| a.status == Some(200)),
            "the late probe was not accepted"
        );
        let acknowledged = Instant::now();
        let url = format!("{}/v1/calls/{}", server.base_url, call.call_key.as_str());
        loop {
            let document: serde_json::Value = client.get(&url).send().await?.json().await?;
            let tags = document["tags"].as_array().cloned().unwrap_or_default();
            if tags.iter().any(|t| t.as_str() == Some(tag.as_str())) {
                break;
            }
            anyhow::ensure!(
                acknowledged.elapsed() < Duration::from_secs(30),
                "the late event never showed"
            );
        }
        costs.push(acknowledged.elapsed().as_secs_f64() * 1000.0);
        // One late event at a time, as they come: not inside the previous one's batch window.
        tokio::time::sleep(PROBE_SPACING).await;
    }
    Ok(costs)
}

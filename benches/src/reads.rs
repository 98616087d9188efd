//! Reads under load: the acknowledgement latency of `callfold serve` on a large SQLite log at a
//! steady delivery rate, without reads, then with `/status` and `/v1/stats` requested in loops.
//! Reads must not delay acknowledgements.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use callfold_simulate::Report;
use callfold_store::Store;

use crate::ingest::signed_deliveries;
use crate::servers::{Server, start_callfold};
use crate::{late, rebuild};

/// How the deliveries and the reads are paced.
#[derive(Clone, Copy, Debug)]
pub struct ReadLoad {
    /// Deliveries per second, in both phases.
    pub rate: f64,
    /// Length of each phase.
    pub phase: Duration,
    /// Loops each requesting `/status` then `/v1/stats`, back to back, in the second phase.
    pub read_loops: usize,
}

/// The acknowledgements of one kind of phase, and the reads answered meanwhile.
pub struct Phase {
    /// Every delivery's answer.
    pub report: Report,
    /// Reads answered 200.
    pub reads: usize,
}

impl Phase {
    /// Nothing yet.
    pub fn empty() -> Self {
        Phase {
            report: Report {
                answers: Vec::new(),
                elapsed: Duration::ZERO,
                sample_call: None,
            },
            reads: 0,
        }
    }

    /// Adds the deliveries and reads of `other`.
    pub fn extend(&mut self, other: Phase) {
        self.report.answers.extend(other.report.answers);
        self.report.elapsed += other.report.elapsed;
        self.reads += other.reads;
    }

    /// Reads answered per second.
    pub fn reads_per_second(&self) -> f64 {
        self.reads as f64 / self.report.elapsed.as_secs_f64()
    }

    /// The acknowledgement latency at `quantile`, in milliseconds.
    pub fn ack_ms(&self, quantile: f64) -> f64 {
        self.report.latency_quantile(quantile).as_secs_f64() * 1000.0
    }

    /// Answers other than 200.
    pub fn not_ok(&self) -> usize {
        self.report
            .answers
            .iter()
            .filter(|answer| answer.status != Some(200))
            .count()
    }
}

/// Fills a SQLite log at `url` to about `events` events, starts `callfold serve` on it and
/// waits until everything is folded. Returns the server and the log's size.
pub async fn prepare(url: &str, events: usize) -> anyhow::Result<(Server, i64)> {
    let store = Store::connect(url).await?;
    store.migrate().await?;
    let filled = rebuild::fill_log(&store, events, 91).await?;
    let server = start_callfold(url, &[]).await?;
    late::wait_until_folded(&store).await?;
    store.close().await;
    Ok((server, filled.events))
}

/// One phase of `load` against `server`: deliveries (from seed `seed`) at the steady rate, and,
/// when `with_reads`, the read loops running until the last delivery is answered.
pub async fn phase(
    server: &Server,
    load: ReadLoad,
    with_reads: bool,
    seed: u64,
) -> anyhow::Result<Phase> {
    let count = (load.rate * load.phase.as_secs_f64()).ceil() as usize;
    let deliveries = signed_deliveries(count, seed);
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let loops = if with_reads { load.read_loops } else { 0 };
    let client = reqwest::Client::new();
    let readers: Vec<_> = (0..loops)
        .map(|_| {
            let (done, reads, client) = (Arc::clone(&done), Arc::clone(&reads), client.clone());
            let urls = ["/status", "/v1/stats"].map(|path| format!("{}{path}", server.base_url));
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    for url in &urls {
                        let response = client.get(url).send().await?;
                        anyhow::ensure!(response.status() == 200, "{url}: {}", response.status());
                        response.bytes().await?;
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            })
        })
        .collect();
    let report =
        callfold_simulate::send_at_rate(&[server.webhook_url()], deliveries, load.rate).await;
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await??;
    }
    Ok(Phase {
        report,
        reads: reads.load(Ordering::Relaxed),
    })
}

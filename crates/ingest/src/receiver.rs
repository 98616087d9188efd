//! The receiver's decision for one delivery: the order of checks once the headers and body are
//! read, the outcome of each case, and the counters of outcomes. The HTTP endpoint that reads
//! the request and turns an outcome into a status lives in `callfold-service`.
//!
//! A receipt is only ever given after the commit queue reports the event durable (or already
//! logged). Nothing is written for a delivery that fails a check.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use callfold_store::{AppendOutcome, EventTime, NewEvent};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::commit::{AppendError, CommitQueue};
use crate::envelope::LinkingRules;
use crate::rejections::RecentRejections;
use crate::signature::{HeaderError, SignedHeaders, Verifier, VerifyError};

/// The path Allo is configured to POST to.
pub const WEBHOOK_PATH: &str = "/webhooks/allo";

/// Why a delivery was not stored. The messages name the problem but never a secret or which
/// secret was tried; the endpoint answers each with the status its documentation gives.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// 400: a `webhook-*` header is missing or malformed.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// 400: the client stopped sending the body part-way.
    #[error("could not read the request body")]
    UnreadableBody,
    /// 401: stale or future timestamp, or no matching signature.
    #[error(transparent)]
    Unverified(#[from] VerifyError),
    /// 408: the body did not arrive in time; the connection is closed.
    #[error("the body did not arrive within {} ms", .timeout.as_millis())]
    SlowBody {
        /// The limit.
        timeout: Duration,
    },
    /// 413: the body is larger than the configured limit.
    #[error("body larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, inclusive.
        limit: usize,
    },
    /// 503: the queue is full, or the store failed or did not commit in time; the sender
    /// should retry.
    #[error(transparent)]
    Unavailable(#[from] AppendError),
}

impl Rejection {
    /// The `outcome` label of this rejection in `callfold_deliveries_total` and in the list of
    /// refused requests.
    pub fn outcome_label(&self) -> &'static str {
        match self {
            Rejection::Header(_) | Rejection::UnreadableBody => "bad_request",
            Rejection::Unverified(VerifyError::OutsideTolerance { .. }) => "stale_timestamp",
            Rejection::Unverified(VerifyError::NoMatchingSignature) => "bad_signature",
            Rejection::TooLarge { .. } => "too_large",
            Rejection::SlowBody { .. } => "slow_body",
            Rejection::Unavailable(AppendError::QueueFull) => "queue_full",
            Rejection::Unavailable(AppendError::StoreUnavailable) => "store_unavailable",
            Rejection::Unavailable(AppendError::CommitTimedOut) => "commit_timeout",
        }
    }
}

/// What became of an accepted delivery, and where it is in the log: the 200 answer's body.
#[derive(Clone, Debug, Serialize)]
pub struct Receipt {
    /// `accepted`, `quarantined` or `duplicate`.
    pub status: &'static str,
    /// The position of the delivery (or of its first copy) in the log.
    pub seq: i64,
}

/// Everything the receiver needs, shared by all deliveries. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Receiver {
    verifier: Arc<Verifier>,
    linking_rules: Arc<LinkingRules>,
    queue: CommitQueue,
    rejections: RecentRejections,
}

impl Receiver {
    /// Bundles the verifier, the linking rules and the commit queue.
    pub fn new(verifier: Verifier, linking_rules: LinkingRules, queue: CommitQueue) -> Self {
        Self {
            verifier: Arc::new(verifier),
            linking_rules: Arc::new(linking_rules),
            queue,
            rejections: RecentRejections::default(),
        }
    }

    /// The requests this receiver refused before they proved authentic.
    pub fn rejections(&self) -> RecentRejections {
        self.rejections.clone()
    }

    /// Verifies `body` against `signed`, reads its envelope and appends it; what to answer.
    /// `started` is when the request arrived, for the acknowledgement-time histogram.
    pub async fn accept(
        &self,
        signed: SignedHeaders,
        body: Vec<u8>,
        received_at: EventTime,
        started: Instant,
    ) -> Result<Receipt, Rejection> {
        verify(&self.verifier, &signed, &body)?;
        let content = self.linking_rules.read(&body);
        let quarantined = content.quarantine_reason().is_some();
        let unlinked = content.is_unlinked();
        if let Some(reason) = content.quarantine_reason() {
            tracing::warn!(%reason, "authentic delivery quarantined");
        }
        let event = NewEvent {
            webhook_id: signed.webhook_id,
            webhook_timestamp: signed.timestamp,
            received_at,
            body_sha256: Sha256::digest(&body).into(),
            body,
            content,
        };
        let receipt = receipt_of(self.queue.append(event).await?, quarantined, unlinked);
        count_delivery(receipt.status);
        metrics::histogram!("callfold_ack_seconds").record(started.elapsed().as_secs_f64());
        Ok(receipt)
    }

    /// Counts `rejection` and, unless the sender was only asked to retry, remembers it among
    /// the refused requests with where it came from.
    pub fn refused(&self, rejection: &Rejection, source: Option<SocketAddr>) {
        // Debug, not warn: anyone can send these, and they must not flood the log.
        tracing::debug!(outcome = rejection.outcome_label(), error = %rejection, "delivery rejected");
        count_delivery(rejection.outcome_label());
        if !matches!(rejection, Rejection::Unavailable(_)) {
            self.rejections.record(rejection.outcome_label(), source);
        }
    }
}

/// The receipt of an append's `outcome`, for a delivery the receiver itself `quarantined` or
/// found `unlinked`.
fn receipt_of(outcome: AppendOutcome, quarantined: bool, unlinked: bool) -> Receipt {
    match outcome {
        AppendOutcome::Appended { seq } if quarantined => Receipt {
            status: "quarantined",
            seq,
        },
        AppendOutcome::Quarantined { seq } => Receipt {
            status: "quarantined",
            seq,
        },
        AppendOutcome::Appended { seq } => {
            if unlinked {
                metrics::counter!("callfold_unlinked_events_total").increment(1);
            }
            Receipt {
                status: "accepted",
                seq,
            }
        }
        AppendOutcome::Duplicate { seq, conflicting } => {
            if conflicting {
                tracing::warn!(
                    seq,
                    "webhook-id reused with a different body; kept the first copy"
                );
                metrics::counter!("callfold_webhook_id_conflicts_total").increment(1);
            }
            Receipt {
                status: "duplicate",
                seq,
            }
        }
    }
}

/// Every value of `callfold_deliveries_total`'s `outcome` label: what became of a delivery, or
/// why it was refused. A service shows each of them from its start, at zero.
pub const DELIVERY_OUTCOMES: [&str; 11] = [
    "accepted",
    "duplicate",
    "quarantined",
    "bad_request",
    "bad_signature",
    "stale_timestamp",
    "too_large",
    "slow_body",
    "queue_full",
    "store_unavailable",
    "commit_timeout",
];

fn count_delivery(outcome: &'static str) {
    debug_assert!(
        DELIVERY_OUTCOMES.contains(&outcome),
        "{outcome} is missing from DELIVERY_OUTCOMES"
    );
    metrics::counter!("callfold_deliveries_total", "outcome" => outcome).increment(1);
}

fn unix_now() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
}

/// Verifies the delivery, and for an authentic one (on time or not) records how far its
/// timestamp is from this clock: the gauge shows clock skew no forger can move.
fn verify(verifier: &Verifier, signed: &SignedHeaders, body: &[u8]) -> Result<(), VerifyError> {
    let now = unix_now();
    let verdict = verifier.verify(signed, body, now);
    if matches!(verdict, Ok(()) | Err(VerifyError::OutsideTolerance { .. })) {
        let skew = now.saturating_sub(signed.timestamp);
        metrics::gauge!("callfold_webhook_clock_skew_seconds").set(skew as f64);
    }
    verdict
}

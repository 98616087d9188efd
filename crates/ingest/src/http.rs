//! The webhook endpoint, `POST /webhooks/allo`: the order of checks, the answer for each case,
//! and the counters of outcomes.
//!
//! A 200 is only ever sent after the commit queue reports the event durable (or already logged).
//! Nothing is written for a delivery that fails a check.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use callfold_store::{AppendOutcome, EventTime, NewEvent};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::commit::{AppendError, CommitQueue};
use crate::envelope::LinkingRules;
use crate::listener::PeerAddr;
use crate::rejections::RecentRejections;
use crate::signature::{HeaderError, SignedHeaders, Verifier, VerifyError};

/// The path Allo is configured to POST to.
pub const WEBHOOK_PATH: &str = "/webhooks/allo";

/// What Allo is told to wait before the next attempt after a 503.
const RETRY_AFTER_SECS: &str = "5";

/// What a delivery's body may be.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// Largest accepted body, in bytes (inclusive); larger is answered 413.
    pub max_bytes: usize,
    /// Longest time for the body to arrive after the headers; slower is answered 408.
    pub read_timeout: Duration,
}

/// Everything the endpoint needs, shared by all requests.
#[derive(Clone, Debug)]
pub struct IngestState {
    verifier: Arc<Verifier>,
    linking_rules: Arc<LinkingRules>,
    queue: CommitQueue,
    body_limits: BodyLimits,
    rejections: RecentRejections,
}

impl IngestState {
    /// Bundles the verifier, the linking rules, the commit queue and the body limits.
    pub fn new(
        verifier: Verifier,
        linking_rules: LinkingRules,
        queue: CommitQueue,
        body_limits: BodyLimits,
    ) -> Self {
        Self {
            verifier: Arc::new(verifier),
            linking_rules: Arc::new(linking_rules),
            queue,
            body_limits,
            rejections: RecentRejections::default(),
        }
    }

    /// The requests this receiver refused before they proved authentic.
    pub fn rejections(&self) -> RecentRejections {
        self.rejections.clone()
    }
}

/// The receiver's routes.
pub fn router(state: IngestState) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(receive))
        .with_state(state)
}

/// Why a delivery was not stored. Each variant documents its status; the messages name the
/// problem but never a secret or which secret was tried.
#[derive(Debug, thiserror::Error)]
enum Rejection {
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
    fn status(&self) -> StatusCode {
        match self {
            Rejection::Header(_) | Rejection::UnreadableBody => StatusCode::BAD_REQUEST,
            Rejection::Unverified(_) => StatusCode::UNAUTHORIZED,
            Rejection::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::SlowBody { .. } => StatusCode::REQUEST_TIMEOUT,
            Rejection::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn outcome_label(&self) -> &'static str {
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

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        // Debug, not warn: anyone can send these, and they must not flood the log.
        tracing::debug!(outcome = self.outcome_label(), error = %self, "delivery rejected");
        count_delivery(self.outcome_label());
        let status = self.status();
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        match status {
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            // The rest of a slow body is not worth waiting for.
            StatusCode::REQUEST_TIMEOUT => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// The 200 answer: what became of the delivery, and where it is in the log.
#[derive(Serialize)]
struct Receipt {
    status: &'static str,
    seq: i64,
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

async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limits: BodyLimits,
) -> Result<Vec<u8>, Rejection> {
    let limit = limits.max_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(Rejection::TooLarge { limit });
    }
    let collected = tokio::time::timeout(limits.read_timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| Rejection::SlowBody {
            timeout: limits.read_timeout,
        })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes().into()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Rejection::TooLarge { limit })
        }
        Err(_) => Err(Rejection::UnreadableBody),
    }
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

#[tracing::instrument(skip_all, fields(webhook_id))]
async fn receive(
    State(state): State<IngestState>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match accept(&state, headers, body).await {
        Ok(receipt) => Json(receipt).into_response(),
        Err(rejection) => {
            if !matches!(rejection, Rejection::Unavailable(_)) {
                let source = peer.map(|Extension(PeerAddr(addr))| addr);
                state.rejections.record(rejection.outcome_label(), source);
            }
            rejection.into_response()
        }
    }
}

/// Checks, reads, verifies and appends one delivery; what to answer.
async fn accept(state: &IngestState, headers: HeaderMap, body: Body) -> Result<Receipt, Rejection> {
    let received_at = EventTime::now();
    let started = std::time::Instant::now();
    let signed = SignedHeaders::parse(&headers)?;
    tracing::Span::current().record("webhook_id", signed.webhook_id.as_str());
    let body = read_body(&headers, body, state.body_limits).await?;
    verify(&state.verifier, &signed, &body)?;

    let content = state.linking_rules.read(&body);
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
    let receipt = match state.queue.append(event).await? {
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
    };
    count_delivery(receipt.status);
    metrics::histogram!("callfold_ack_seconds").record(started.elapsed().as_secs_f64());
    Ok(receipt)
}

//! The webhook endpoint, `POST /webhooks/allo`: parses the signed headers, reads the body
//! within its limits, hands both to `callfold_ingest::Receiver`, and answers each outcome
//! with its status (see `callfold_ingest::Rejection`).

use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use callfold_ingest::{Receipt, Receiver, Rejection, SignedHeaders, WEBHOOK_PATH};
use callfold_store::EventTime;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use crate::listener::PeerAddr;

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

#[derive(Clone, Debug)]
struct Endpoint {
    receiver: Receiver,
    body_limits: BodyLimits,
}

/// The webhook route of `receiver`.
pub fn router(receiver: Receiver, body_limits: BodyLimits) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(receive))
        .with_state(Endpoint {
            receiver,
            body_limits,
        })
}

fn status_of(rejection: &Rejection) -> StatusCode {
    match rejection {
        Rejection::Header(_) | Rejection::UnreadableBody => StatusCode::BAD_REQUEST,
        Rejection::Unverified(_) => StatusCode::UNAUTHORIZED,
        Rejection::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Rejection::SlowBody { .. } => StatusCode::REQUEST_TIMEOUT,
        Rejection::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn answer(rejection: &Rejection) -> Response {
    let status = status_of(rejection);
    let body = Json(json!({"error": rejection.to_string()}));
    let mut response = (status, body).into_response();
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

#[tracing::instrument(skip_all, fields(webhook_id))]
async fn receive(
    State(endpoint): State<Endpoint>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match accept(&endpoint, headers, body).await {
        Ok(receipt) => Json(receipt).into_response(),
        Err(rejection) => {
            let source = peer.map(|Extension(PeerAddr(addr))| addr);
            endpoint.receiver.refused(&rejection, source);
            answer(&rejection)
        }
    }
}

/// Parses the headers and reads the body of one delivery, then lets the receiver decide.
async fn accept(endpoint: &Endpoint, headers: HeaderMap, body: Body) -> Result<Receipt, Rejection> {
    let received_at = EventTime::now();
    let started = Instant::now();
    let signed = SignedHeaders::parse(&headers)?;
    tracing::Span::current().record("webhook_id", signed.webhook_id.as_str());
    let body = read_body(&headers, body, endpoint.body_limits).await?;
    let receiver = &endpoint.receiver;
    receiver.accept(signed, body, received_at, started).await
}

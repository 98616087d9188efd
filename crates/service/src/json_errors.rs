//! Every error answer is JSON: the layer that gives `{"error": message}` to the error answers
//! no handler of ours wrote, those axum makes by itself (404 for a path no route serves, 405
//! for a method a route does not take, which keeps its `Allow` header, 400 when a path or query
//! parameter does not parse), which otherwise have an empty or plain-text body. A handler's own
//! JSON answer passes through untouched.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::json;

/// The most of an error's text body kept as its message; axum's are one line.
const MAX_MESSAGE_BYTES: usize = 4096;

/// The middleware: passes every answer through, but an error answer (4xx or 5xx) whose body is
/// not JSON is answered again as `{"error": message}`, with the same status and headers.
pub async fn as_json(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match http_body_util::Limited::new(body, MAX_MESSAGE_BYTES)
        .collect()
        .await
    {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes())
            .trim()
            .to_owned(),
        Err(_) => String::new(),
    };
    let message = match status {
        _ if !text.is_empty() => text,
        StatusCode::NOT_FOUND => format!("nothing is served at {path}"),
        StatusCode::METHOD_NOT_ALLOWED => {
            format!("{method} is not allowed on {path}: the Allow header lists what is")
        }
        other => other
            .canonical_reason()
            .unwrap_or("request failed")
            .to_owned(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = Body::from(json!({ "error": message }).to_string());
    Response::from_parts(parts, body)
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"))
}

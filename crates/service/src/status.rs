//! The status page for operators, rendered on the server as plain HTML with an inline SVG chart
//! (no script, nothing to build): `GET /status` shows records stored per minute over the last
//! hour, what the log holds by outcome, the projector's lag and the calls changed last;
//! `GET /status/calls/{call_id}` shows one call's events in arrival order beside their
//! effective order, late arrivals highlighted.
//!
//! Everything shown comes from the database, so every process shows the same page. Both
//! routes are private: [`crate::routes`] puts the token in front of them, as of `/v1`.

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use callfold_projector::{
    CallDocument, CallMeta, CallStatus, CallView, Calls, HistoryEvent, QueryError,
};
use callfold_store::{EventTime, Store};

/// The overview's path, where `/` redirects.
pub const OVERVIEW: &str = "/status";
/// How many of the calls changed last the page lists.
const RECENT_CALLS: i64 = 20;
/// The chart's span, in minutes.
const CHART_MINUTES: i64 = 60;
/// Seconds between the overview's refreshes.
const REFRESH_SECONDS: u32 = 5;

struct StatusPage {
    store: Store,
    calls: Calls,
}

/// The status page's routes, over `store` and `calls`.
pub fn router(store: Store, calls: Calls) -> Router {
    Router::new()
        .route(OVERVIEW, get(overview))
        .route("/status/calls/{call_id}", get(call_timeline))
        .with_state(Arc::new(StatusPage { store, calls }))
}

/// `text` safe inside HTML text and attribute values.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A value as page text, escaped; a dash when there is none.
fn shown(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "–".to_owned(), |value| escape(&value.to_string()))
}

/// A call's tags as page text, comma-separated.
fn tags(document: &CallDocument) -> String {
    let tags: Vec<&str> = document.tags.iter().map(String::as_str).collect();
    escape(&tags.join(", "))
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#1f2933}\
h1{margin-bottom:.2rem}h2{margin-top:2rem}table{border-collapse:collapse}\
td,th{padding:.3rem .8rem;border-bottom:1px solid #d9e2ec;text-align:left}\
.numbers td:nth-child(2){text-align:right;font-variant-numeric:tabular-nums}\
.late{background:#fde8c8}.badge{background:#d64545;color:#fff;border-radius:.3rem;\
padding:0 .4rem;font-size:.8rem}.columns{display:flex;gap:3rem;flex-wrap:wrap}\
.muted{color:#7b8794}";

fn page(title: &str, refresh: Option<u32>, body: &str) -> Html<String> {
    let refresh = refresh.map_or(String::new(), |seconds| {
        format!("<meta http-equiv=\"refresh\" content=\"{seconds}\">")
    });
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}\
         <title>{title}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        title = escape(title)
    ))
}

struct PageError(QueryError);

impl From<QueryError> for PageError {
    fn from(error: QueryError) -> Self {
        PageError(error)
    }
}

impl From<callfold_store::StoreError> for PageError {
    fn from(error: callfold_store::StoreError) -> Self {
        PageError(error.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            QueryError::UnknownCall(_) => StatusCode::NOT_FOUND,
            QueryError::BadParameter { .. } => StatusCode::BAD_REQUEST,
            QueryError::UnreadableDocument(_) => StatusCode::INTERNAL_SERVER_ERROR,
            QueryError::Store(error) => {
                tracing::error!(%error, "status page failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let body = format!("<h1>{}</h1>", escape(&self.0.to_string()));
        (status, page("callfold status", None, &body)).into_response()
    }
}

/// Bars of records stored per minute, one per minute of the last hour, as inline SVG.
fn chart(per_minute: &[(EventTime, i64)], now: EventTime) -> String {
    const WIDTH: i64 = 720;
    const HEIGHT: i64 = 160;
    let bar = WIDTH / CHART_MINUTES;
    let current_minute = now.unix_micros() / 60_000_000;
    let highest = per_minute.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let mut svg = format!(
        "<svg role=\"img\" aria-label=\"records stored per minute\" width=\"{WIDTH}\" \
         height=\"{}\" viewBox=\"0 0 {WIDTH} {}\">",
        HEIGHT + 20,
        HEIGHT + 20
    );
    for (minute, count) in per_minute {
        let age = current_minute - minute.unix_micros() / 60_000_000;
        if !(0..CHART_MINUTES).contains(&age) {
            continue;
        }
        let x = (CHART_MINUTES - 1 - age) * bar;
        let height = (count * HEIGHT / highest).max(1);
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{height}\" fill=\"#2680c2\">\
             <title>{minute}: {count}</title></rect>",
            HEIGHT - height,
            bar - 2,
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"0\" y1=\"{HEIGHT}\" x2=\"{WIDTH}\" y2=\"{HEIGHT}\" stroke=\"#9aa5b1\"/>\
         <text x=\"0\" y=\"{}\" font-size=\"12\">-60 min</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"12\">now</text>\
         <text x=\"0\" y=\"12\" font-size=\"12\">{highest} per minute</text></svg>",
        HEIGHT + 16,
        WIDTH - 28,
        HEIGHT + 16,
    );
    svg
}

fn numbers(rows: &[(&str, String)]) -> String {
    let mut table = String::from("<table class=\"numbers\">");
    for (label, value) in rows {
        let _ = write!(table, "<tr><td>{label}</td><td>{value}</td></tr>");
    }
    table.push_str("</table>");
    table
}

async fn overview(State(status): State<Arc<StatusPage>>) -> Result<Html<String>, PageError> {
    let now = EventTime::now();
    let since = EventTime::from_unix_micros(now.unix_micros() - CHART_MINUTES * 60_000_000);
    let per_minute = status.store.stored_per_minute(since).await?;
    let stats = status.calls.stats().await?;
    let (log, projector) = (&stats.log, &stats.projector);
    let recent = status.store.latest_changes(RECENT_CALLS).await?;

    let mut body = format!(
        "<h1>callfold status</h1><p class=\"muted\">as of {now}; refreshes every \
         {REFRESH_SECONDS} s</p><h2>Deliveries stored, last hour</h2>{}",
        chart(&per_minute, now)
    );
    let usable = log.events - log.quarantined;
    let _ = write!(
        body,
        "<div class=\"columns\"><div><h2>Outcomes in the log</h2>{}<p class=\"muted\">\
         Refusals are not stored: see <a href=\"/v1/rejections\">/v1/rejections</a> and \
         <a href=\"/metrics\">/metrics</a>.</p></div><div><h2>Projector</h2>{}</div></div>",
        numbers(&[
            ("records", log.events.to_string()),
            ("usable", usable.to_string()),
            (
                "quarantined (<a href=\"/v1/quarantine\">list</a>)",
                log.quarantined.to_string()
            ),
            (
                "unlinked (<a href=\"/v1/unlinked\">list</a>)",
                log.unlinked.to_string()
            ),
        ]),
        numbers(&[
            ("calls waiting", projector.calls_waiting.to_string()),
            ("events waiting", projector.events_waiting.to_string()),
            ("lag, seconds", format!("{:.1}", projector.lag_seconds)),
            ("projections", projector.projections.to_string()),
            ("last change", projector.last_change.to_string()),
        ]),
    );
    body.push_str(
        "<h2>Calls changed last</h2><table><tr><th>call</th><th>status</th><th>tags</th>\
         <th>events</th><th>late</th><th>updated</th></tr>",
    );
    for change in &recent {
        let projection = &change.projection;
        let document = CallView::stored(projection).ok().map(|call| call.document);
        let id = escape(projection.call_key.as_str());
        let late = projection.late_events;
        let late = if late > 0 {
            format!("<span class=\"badge\">{late}</span>")
        } else {
            "0".to_owned()
        };
        let _ = write!(
            body,
            "<tr><td><a href=\"/status/calls/{id}\">{id}</a></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{late}</td><td>{}</td></tr>",
            shown(
                document
                    .as_ref()
                    .and_then(|d| d.status.map(CallStatus::as_str))
            ),
            document.as_ref().map_or_else(String::new, tags),
            projection.events_folded,
            projection.updated_at,
        );
    }
    body.push_str("</table>");
    Ok(page("callfold status", Some(REFRESH_SECONDS), &body))
}

/// One side of the timeline: `events` in the order given.
fn timeline(title: &str, events: &[&HistoryEvent]) -> String {
    let mut table = format!(
        "<div><h2>{title}</h2><table><tr><th>seq</th><th>topic</th><th>payload time</th>\
         <th>received</th><th></th></tr>"
    );
    for event in events {
        let late = event.late;
        let _ = write!(
            table,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if late { " class=\"late\"" } else { "" },
            event.seq,
            escape(&event.topic),
            event.timestamp,
            event.received_at,
            if late {
                "<span class=\"badge\">late</span>"
            } else {
                ""
            },
        );
    }
    table.push_str("</table></div>");
    table
}

async fn call_timeline(
    State(status): State<Arc<StatusPage>>,
    Path(call_id): Path<String>,
) -> Result<Html<String>, PageError> {
    let history = status.calls.events(&call_id).await?;
    let call = status.calls.show(&call_id, None).await.ok();
    let document = call.as_ref().map(|call| &call.document);
    let late_events = call.as_ref().and_then(|call| match call.meta {
        CallMeta::Stored { late_events, .. } => Some(late_events),
        CallMeta::AsOf { .. } => None,
    });
    let effective: Vec<&HistoryEvent> = history.events.iter().collect();
    let mut arrival = effective.clone();
    arrival.sort_by_key(|event| event.seq);
    let id = escape(&call_id);
    let body = format!(
        "<p><a href=\"/status\">status</a></p><h1>Call {id}</h1>{}\
         <div class=\"columns\">{}{}</div>",
        numbers(&[
            (
                "status",
                shown(document.and_then(|d| d.status.map(CallStatus::as_str)))
            ),
            (
                "direction",
                shown(document.and_then(|d| d.direction.as_ref()))
            ),
            ("tags", document.map_or_else(String::new, tags)),
            ("late events", shown(late_events)),
        ]),
        timeline("Arrival order", &arrival),
        timeline("Effective order", &effective),
    );
    Ok(page(&format!("callfold: call {call_id}"), None, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_payloads_cannot_open_markup() {
        assert_eq!(
            escape("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }
}

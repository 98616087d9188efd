//! The status page for operators, rendered on the server as plain HTML with an inline SVG chart
//! (no script, nothing to build): `GET /status` shows records stored per minute over the last
//! hour, what the log holds by outcome, the projector's lag and the calls changed last;
//! `GET /status/calls/{call_id}` shows one call's events in arrival order beside their
//! effective order, late arrivals highlighted, then each of its records as the log keeps it
//! (headers' values, raw body escaped and cut at [`MAX_SHOWN_BODY`], the command that prints
//! it whole); `GET /status/calls?id=` is where the search box (a plain GET form) leads, and
//! redirects to that call's page.
//!
//! A page links only to what its role serves ([`ServedLinks`]). Its errors (404 for an unknown
//! call among them) are the JSON of every other route (see `crate::query_api::ApiError`).
//!
//! Everything shown comes from the database, so every process shows the same page. Every
//! route is private: [`crate::routes`] puts the token in front of them, as of `/v1`.

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{Html, Redirect};
use axum::routing::get;
use callfold_projector::{
    CallDocument, CallMeta, CallStatus, CallView, Calls, HistoryEvent, QueryError,
};
use callfold_store::{EventTime, LoggedEvent, ProjectionChange, Store};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use crate::query_api::ApiError;

/// The overview's path, where `/` redirects.
pub const OVERVIEW: &str = "/status";
/// Where the search box leads (`?id=`), and the prefix of each call's page.
const CALL_PAGES: &str = "/status/calls";
/// The most of a body a call's page shows, in bytes; the command beside it prints the whole.
pub const MAX_SHOWN_BODY: usize = 64 * 1024;

/// How many of the calls changed last the page lists.
const RECENT_CALLS: i64 = 20;
/// The chart's span, in minutes.
const CHART_MINUTES: i64 = 60;
/// Seconds between the overview's refreshes.
const REFRESH_SECONDS: u32 = 5;

/// Which of the private routes beside the status page its role serves, and so may be linked
/// to. The quarantine's and the operational routes are served by every role.
#[derive(Clone, Copy, Debug)]
pub struct ServedLinks {
    /// `/v1/rejections`, served where a receiver runs.
    pub rejections: bool,
    /// The query API (`/v1/calls`, `/v1/unlinked`, ...), served where a projector runs.
    pub query_api: bool,
}

struct StatusPage {
    store: Store,
    calls: Calls,
    served: ServedLinks,
}

/// The status page's routes, over `store` and `calls`, linking to what `served` says.
pub fn router(store: Store, calls: Calls, served: ServedLinks) -> Router {
    Router::new()
        .route(OVERVIEW, get(overview))
        .route(CALL_PAGES, get(search))
        .route("/status/calls/{call_id}", get(call_timeline))
        .with_state(Arc::new(StatusPage {
            store,
            calls,
            served,
        }))
}

/// What a path segment may hold as it is: the characters RFC 3986 leaves unreserved.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The path of `call_id`'s page, the id percent-encoded (an id is any text a linking rule
/// found, `/`, `?` and `#` included).
fn call_page(call_id: &str) -> String {
    format!(
        "{CALL_PAGES}/{}",
        utf8_percent_encode(call_id, PATH_SEGMENT)
    )
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
.muted{color:#7b8794}.record{border-top:1px solid #d9e2ec;margin-top:1.5rem}\
pre{background:#f5f7fa;padding:.6rem;white-space:pre-wrap;word-break:break-all;max-height:30rem;\
overflow:auto}code.command{user-select:all;background:#f5f7fa;padding:.1rem .3rem}\
form.search{margin:1rem 0}";

/// The search box: a plain GET form to [`search`], on every page.
fn search_form() -> String {
    format!(
        "<form class=\"search\" method=\"get\" action=\"{CALL_PAGES}\"><label>Call id \
         <input name=\"id\" required size=\"32\" placeholder=\"cll_...\"></label> \
         <button type=\"submit\">Show the call</button></form>"
    )
}

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

/// The overview's line on refusals: where this role shows them.
fn refusals_note(served: ServedLinks) -> &'static str {
    if served.rejections {
        "Refusals are not stored: see <a href=\"/v1/rejections\">/v1/rejections</a> and \
         <a href=\"/metrics\">/metrics</a>."
    } else {
        "Refusals are not stored: the receiving processes list them (their \
         <code>/v1/rejections</code>) and count them (their <code>/metrics</code>)."
    }
}

async fn overview(State(status): State<Arc<StatusPage>>) -> Result<Html<String>, ApiError> {
    let now = EventTime::now();
    let since = EventTime::from_unix_micros(now.unix_micros() - CHART_MINUTES * 60_000_000);
    let per_minute = status
        .store
        .stored_per_minute(since)
        .await
        .map_err(QueryError::from)?;
    let stats = status.calls.stats().await?;
    let (log, projector) = (&stats.log, &stats.projector);
    let recent = status
        .store
        .latest_changes(RECENT_CALLS)
        .await
        .map_err(QueryError::from)?;

    let mut body = format!(
        "<h1>callfold status</h1><p class=\"muted\">as of {now}; refreshes every \
         {REFRESH_SECONDS} s; this process's <a href=\"/metrics\">metrics</a> and \
         <a href=\"/readyz\">readiness</a></p>{}<h2>Deliveries stored, last hour</h2>{}",
        search_form(),
        chart(&per_minute, now)
    );
    let usable = log.events - log.quarantined;
    let unlinked_list = if status.served.query_api {
        "unlinked (<a href=\"/v1/unlinked\">list</a>)"
    } else {
        "unlinked (<code>callfold unlinked list</code>)"
    };
    let _ = write!(
        body,
        "<div class=\"columns\"><div><h2>Outcomes in the log</h2>{}<p class=\"muted\">{}</p>\
         </div><div><h2>Projector</h2>{}</div></div>",
        numbers(&[
            ("records", log.events.to_string()),
            ("usable", usable.to_string()),
            (
                "quarantined (<a href=\"/v1/quarantine\">list</a>)",
                log.quarantined.to_string()
            ),
            (unlinked_list, log.unlinked.to_string()),
        ]),
        refusals_note(status.served),
        numbers(&[
            ("calls waiting", projector.calls_waiting.to_string()),
            ("events waiting", projector.events_waiting.to_string()),
            ("lag, seconds", format!("{:.1}", projector.lag_seconds)),
            ("projections", projector.projections.to_string()),
            ("last change", projector.last_change.to_string()),
        ]),
    );
    recent_calls_table(&mut body, &recent);
    Ok(page("callfold status", Some(REFRESH_SECONDS), &body))
}

/// The table of the calls changed last, each linking to its page.
fn recent_calls_table(body: &mut String, recent: &[ProjectionChange]) {
    body.push_str(
        "<h2>Calls changed last</h2><table><tr><th>call</th><th>status</th><th>tags</th>\
         <th>events</th><th>late</th><th>updated</th></tr>",
    );
    for change in recent {
        let projection = &change.projection;
        let document = CallView::stored(projection).ok().map(|call| call.document);
        let id = projection.call_key.as_str();
        let late = projection.late_events;
        let late = if late > 0 {
            format!("<span class=\"badge\">{late}</span>")
        } else {
            "0".to_owned()
        };
        let _ = write!(
            body,
            "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{late}</td><td>{}</td></tr>",
            escape(&call_page(id)),
            escape(id),
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
}

/// What the search box sends.
#[derive(Debug, Deserialize)]
struct SearchParams {
    id: Option<String>,
}

/// `GET /status/calls?id=`: redirects to the page of the call id given (spaces around it, as a
/// paste brings them, ignored); 400 without one.
async fn search(Query(params): Query<SearchParams>) -> Result<Redirect, ApiError> {
    let id = params.id.as_deref().map(str::trim).unwrap_or_default();
    if id.is_empty() {
        let missing = QueryError::BadParameter {
            name: "id",
            problem: "give the id of a call".to_owned(),
        };
        return Err(missing.into());
    }
    Ok(Redirect::to(&call_page(id)))
}

/// One side of the timeline: `events` in the order given, each seq linking to its record.
fn timeline(title: &str, events: &[&HistoryEvent]) -> String {
    let mut table = format!(
        "<div><h2>{title}</h2><table><tr><th>seq</th><th>topic</th><th>payload time</th>\
         <th>received</th><th></th></tr>"
    );
    for event in events {
        let late = event.late;
        let seq = event.seq;
        let _ = write!(
            table,
            "<tr{}><td><a href=\"#record-{seq}\">{seq}</a></td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td></tr>",
            if late { " class=\"late\"" } else { "" },
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

/// A record's body as page text: escaped, and cut after [`MAX_SHOWN_BODY`] bytes with a note
/// saying how long it is and how to get all of it.
fn shown_body(record: &LoggedEvent) -> String {
    let body = &record.body;
    let cut = body.len().min(MAX_SHOWN_BODY);
    let text = String::from_utf8_lossy(&body[..cut]);
    let mut shown = format!("<pre>{}</pre>", escape(&text));
    if cut < body.len() {
        let _ = write!(
            shown,
            "<p class=\"truncated\">truncated, {} bytes: the first {MAX_SHOWN_BODY} are \
             shown; the command below prints them all</p>",
            body.len()
        );
    }
    shown
}

/// One record as the log keeps it: the headers' values stored, the body, and the commands that
/// print it whole.
fn record(record: &LoggedEvent) -> String {
    let seq = record.seq;
    let sha256: String = record
        .body_sha256
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let received_signed = EventTime::from_unix_micros(record.webhook_timestamp * 1_000_000);
    format!(
        "<div class=\"record\" id=\"record-{seq}\"><h3>seq {seq}</h3>{}{}\
         <p>The whole record: <code class=\"command\">callfold quarantine show {seq}</code> \
         or <a href=\"/v1/quarantine/{seq}\">/v1/quarantine/{seq}</a></p></div>",
        numbers(&[
            ("webhook-id", escape(record.webhook_id.as_str())),
            (
                "webhook-timestamp",
                format!("{} ({received_signed})", record.webhook_timestamp)
            ),
            (
                "webhook-signature",
                "matched a configured secret (verified on receipt; not stored)".to_owned()
            ),
            ("received", record.received_at.to_string()),
            (
                "body",
                format!("{} bytes, SHA-256 {sha256}", record.body.len())
            ),
        ]),
        shown_body(record),
    )
}

async fn call_timeline(
    State(status): State<Arc<StatusPage>>,
    Path(call_id): Path<String>,
) -> Result<Html<String>, ApiError> {
    let (history, records) = status.calls.events_and_records(&call_id).await?;
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
    let as_json = if status.served.query_api {
        let path = escape(&format!(
            "/v1/calls/{}",
            utf8_percent_encode(&call_id, PATH_SEGMENT)
        ));
        format!(
            "<p class=\"muted\">As JSON: <a href=\"{path}\">the call</a>, \
             <a href=\"{path}/events\">its events</a></p>"
        )
    } else {
        String::new()
    };
    let mut body = format!(
        "<p><a href=\"{OVERVIEW}\">status</a></p>{}<h1>Call {id}</h1>{}{as_json}\
         <div class=\"columns\">{}{}</div><h2>Records, in arrival order</h2>\
         <p class=\"muted\">Each as the log keeps it. The commands run where the service's \
         database is configured (<code>DATABASE_URL</code> or <code>--database-url</code>).</p>",
        search_form(),
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
    for logged in &records {
        body.push_str(&record(logged));
    }
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

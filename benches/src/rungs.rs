//! The bench-only servers of the ladder's middle rungs, between the ceiling and callfold:
//!
//! - **verify**: the ceiling plus what every receiver must do, with callfold-ingest's own
//!   functions: parse the `webhook-*` headers, verify the Standard Webhooks signature, read the
//!   envelope (topic, payload time, call); answer 200.
//! - **group commit**: the same plus a minimal durable append: one committer thread owns a
//!   SQLite connection (WAL, `synchronous=FULL`), takes every delivery waiting for it, inserts
//!   them in one transaction into a table whose `webhook_id` is unique, commits, and only then
//!   are they answered. What a short hand-written receiver with group commit does.
//!
//! Both are written plainly on purpose: each rung adds one kind of work to the one below, so the
//! difference between two rungs is the cost of that work.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use callfold_ingest::{LinkingRules, SignedHeaders, Verifier, WEBHOOK_PATH, WebhookSecrets};
use callfold_simulate::traffic::SimulatedEvent;
use callfold_store::Content;
use rusqlite::{Connection, params};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::servers::BENCH_SECRET;

/// Seconds a delivery's timestamp may be from the clock, as Standard Webhooks suggests.
const TOLERANCE_SECS: u64 = 300;
/// Deliveries waiting for the committer before new ones are answered 503.
const QUEUE_CAPACITY: usize = 4096;
/// Most deliveries the committer takes into one transaction.
const MAX_BATCH: usize = 1024;
/// Rows per transaction when the benchmark grows the table directly.
const GROW_BATCH: usize = 1000;

const SCHEMA: &str = "PRAGMA journal_mode = WAL;
     PRAGMA synchronous = FULL;
     PRAGMA busy_timeout = 5000;
     CREATE TABLE IF NOT EXISTS events (
         seq INTEGER PRIMARY KEY,
         webhook_id TEXT NOT NULL UNIQUE,
         webhook_timestamp INTEGER NOT NULL,
         topic TEXT,
         call_key TEXT,
         body BLOB NOT NULL
     );";

const INSERT: &str = "INSERT INTO events (webhook_id, webhook_timestamp, topic, call_key, body) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (webhook_id) DO NOTHING";

/// What the verify rung checks, shared by both rungs.
struct Checks {
    verifier: Verifier,
    linking_rules: LinkingRules,
}

/// An authentic delivery's id, timestamp and envelope.
struct Checked {
    signed: SignedHeaders,
    content: Content,
}

impl Checks {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            verifier: Verifier::new(WebhookSecrets::parse(BENCH_SECRET)?, TOLERANCE_SECS),
            linking_rules: LinkingRules::default(),
        })
    }

    /// Parses the headers (400), verifies the signature (401) and reads the envelope.
    fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<Checked, StatusCode> {
        let signed = SignedHeaders::parse(headers).map_err(|_| StatusCode::BAD_REQUEST)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() as i64);
        self.verifier
            .verify(&signed, body, now)
            .map_err(|_| StatusCode::UNAUTHORIZED)?;
        let content = self.linking_rules.read(body);
        Ok(Checked { signed, content })
    }
}

async fn listen(port: u16, app: Router) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// Serves the verify rung: 200 to every authentic delivery, after checking it.
pub async fn serve_verify(port: u16) -> anyhow::Result<()> {
    async fn answer(
        State(checks): State<Arc<Checks>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        match checks.check(&headers, &body) {
            Ok(_) => StatusCode::OK,
            Err(status) => status,
        }
    }
    let app = Router::new()
        .route(WEBHOOK_PATH, post(answer))
        .with_state(Arc::new(Checks::new()?));
    listen(port, app).await
}

/// One checked delivery on its way to the committer, with where its answer goes.
struct Pending {
    row: Row,
    answer: oneshot::Sender<Option<Receipt>>,
}

/// The columns of one delivery.
struct Row {
    webhook_id: String,
    webhook_timestamp: i64,
    topic: Option<String>,
    call_key: Option<String>,
    body: Vec<u8>,
}

impl Row {
    fn of(webhook_id: String, webhook_timestamp: i64, content: &Content, body: Vec<u8>) -> Self {
        let topic = match content {
            Content::Usable { topic, .. } => Some(topic.as_str().to_owned()),
            Content::Quarantined { .. } => None,
        };
        Self {
            webhook_id,
            webhook_timestamp,
            topic,
            call_key: content.call_key().map(|key| key.as_str().to_owned()),
            body,
        }
    }
}

/// What became of a delivery; answered as callfold's 200 is, `{"status", "seq"}`.
struct Receipt {
    status: &'static str,
    seq: i64,
}

#[derive(Clone)]
struct GroupCommit {
    checks: Arc<Checks>,
    committer: mpsc::Sender<Pending>,
}

/// Serves the group-commit rung on the SQLite database at `path`.
pub async fn serve_group_commit(port: u16, path: &Path) -> anyhow::Result<()> {
    async fn answer(State(state): State<GroupCommit>, headers: HeaderMap, body: Bytes) -> Response {
        let checked = match state.checks.check(&headers, &body) {
            Ok(checked) => checked,
            Err(status) => return status.into_response(),
        };
        let (answer, answered) = oneshot::channel();
        let row = Row::of(
            checked.signed.webhook_id.as_str().to_owned(),
            checked.signed.timestamp,
            &checked.content,
            body.to_vec(),
        );
        if state.committer.try_send(Pending { row, answer }).is_err() {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        match answered.await {
            Ok(Some(Receipt { status, seq })) => {
                axum::Json(serde_json::json!({ "status": status, "seq": seq })).into_response()
            }
            _ => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        }
    }
    let connection = open(path)?;
    let (committer, waiting) = mpsc::channel(QUEUE_CAPACITY);
    std::thread::spawn(move || commit_forever(connection, waiting));
    let state = GroupCommit {
        checks: Arc::new(Checks::new()?),
        committer,
    };
    let app = Router::new()
        .route(WEBHOOK_PATH, post(answer))
        .with_state(state);
    listen(port, app).await
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.execute_batch(SCHEMA)?;
    Ok(connection)
}

/// The committer: waits for a delivery, takes every other one waiting too, commits them in
/// one transaction, then answers them all (`None` when the commit failed).
fn commit_forever(mut connection: Connection, mut waiting: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = waiting.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let rows: Vec<&Row> = batch.iter().map(|pending| &pending.row).collect();
        match append(&mut connection, &rows) {
            Ok(receipts) => {
                for (pending, receipt) in batch.drain(..).zip(receipts) {
                    let _ = pending.answer.send(Some(receipt));
                }
            }
            Err(_) => {
                for pending in batch.drain(..) {
                    let _ = pending.answer.send(None);
                }
            }
        }
    }
}

/// Inserts `rows` in one transaction: each appended, or a duplicate of an earlier row.
fn append(connection: &mut Connection, rows: &[&Row]) -> rusqlite::Result<Vec<Receipt>> {
    let transaction = connection.transaction()?;
    let mut receipts = Vec::with_capacity(rows.len());
    {
        let mut insert = transaction.prepare_cached(INSERT)?;
        let mut earlier =
            transaction.prepare_cached("SELECT seq FROM events WHERE webhook_id = ?1")?;
        for row in rows {
            let inserted = insert.execute(params![
                row.webhook_id,
                row.webhook_timestamp,
                row.topic,
                row.call_key,
                row.body
            ])?;
            receipts.push(if inserted == 1 {
                Receipt {
                    status: "accepted",
                    seq: transaction.last_insert_rowid(),
                }
            } else {
                Receipt {
                    status: "duplicate",
                    seq: earlier.query_row([&row.webhook_id], |found| found.get(0))?,
                }
            });
        }
    }
    transaction.commit()?;
    Ok(receipts)
}

/// Appends `events` to the group-commit rung's table at `path` directly, as the server would
/// have stored them, in transactions of a thousand rows; returns the rows in the table.
pub fn grow_table(path: &Path, events: Vec<SimulatedEvent>, timestamp: i64) -> anyhow::Result<i64> {
    let linking_rules = LinkingRules::default();
    let mut connection = open(path)?;
    for chunk in events.chunks(GROW_BATCH) {
        let rows: Vec<Row> = chunk
            .iter()
            .map(|event| {
                let content = linking_rules.read(&event.body);
                Row::of(
                    event.webhook_id.clone(),
                    timestamp,
                    &content,
                    event.body.clone(),
                )
            })
            .collect();
        append(&mut connection, &rows.iter().collect::<Vec<_>>())?;
    }
    Ok(connection.query_row("SELECT count(*) FROM events", [], |row| row.get(0))?)
}

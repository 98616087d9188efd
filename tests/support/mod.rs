//! Shared helpers of the top-level test suites: a fresh database per test on either backend,
//! the service's `App` built in process on a free port ([`spawn_app`]), the `callfold`
//! executable for tests that need a real process ([`start_service`]), signed requests, records
//! as the receiver appends them ([`as_received`]), a call's stored projection
//! ([`stored_projection`]), and the macro that instantiates one behavioural test for both
//! stores.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod certificate;
pub mod relay;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use callfold_ingest::LinkingRules;
use callfold_ingest::{WEBHOOK_PATH, WebhookSecrets, sign};
use callfold_projector::{Calls, LiveChanges, Precedence, fold, fold_events};
use callfold_service::{App, Listeners, Roles, Settings};
use callfold_simulate::SimulateOptions;
use callfold_store::{
    CallKey, CallLink, Content, EventTime, NewEvent, Store, StoredProjection, WebhookId,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Connection;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long test projectors hold their claims: longer than any test, so that a claim only
/// changes hands when a test says so.
pub const LEASE: Duration = Duration::from_secs(600);

/// `body` as the receiver would append it under `webhook_id`, read by the default linking rules.
pub fn as_received(webhook_id: &str, body: &[u8]) -> NewEvent {
    as_received_with(webhook_id, body, LinkingRules::default().read(body))
}

/// `body` appended under `webhook_id` now, with `content` as what was read of it.
pub fn as_received_with(webhook_id: &str, body: &[u8], content: Content) -> NewEvent {
    NewEvent {
        webhook_id: WebhookId::parse(webhook_id).expect("a valid test id"),
        webhook_timestamp: 1_770_714_000,
        received_at: EventTime::now(),
        body: body.to_vec(),
        body_sha256: Sha256::digest(body).into(),
        content,
    }
}

/// The commit deadline of test re-drives: the service's default.
pub fn commit_timeout() -> Duration {
    Settings::default().commit_timeout
}

/// The secret every test receiver accepts (made up for the tests).
pub const SECRET: &str = include_str!("../fixtures/test-secret.txt").trim_ascii();
/// A second made-up secret, as during a rotation.
pub const ROTATED_SECRET: &str = include_str!("../fixtures/rotated-test-secret.txt").trim_ascii();

/// Where the PostgreSQL suite runs; each test gets its own schema inside it.
pub fn postgres_base_url() -> String {
    std::env::var("CALLFOLD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The start of the name of every schema the PostgreSQL suite makes; the rest is
/// `{unix seconds}_{process id}_{number}`.
const TEST_SCHEMA_PREFIX: &str = "cf_test_";

/// How old a test schema must be before a later test process drops it: far longer than any
/// run of the suite, so that runs side by side on one database keep their own.
const STALE_SCHEMA_AGE: Duration = Duration::from_secs(3600);

/// Set once the first PostgreSQL test of this process has dropped the stale schemas.
static STALE_SCHEMAS_DROPPED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Drops the schemas earlier runs of the suite left in the test database: those made more than
/// [`STALE_SCHEMA_AGE`] ago, and those an earlier version of these helpers named by process
/// first, undated (read as made at the process id's second, long ago). The tests never drop
/// their own schema (some end while a process of theirs still holds it), so without this the
/// test database would grow run after run. Each schema is dropped in a transaction of its own,
/// which takes the locks of its tables only.
async fn drop_stale_schemas(admin: &mut sqlx::PgConnection) {
    let schemas: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)")
            .bind(TEST_SCHEMA_PREFIX)
            .fetch_all(&mut *admin)
            .await
            .expect("list the test schemas");
    let newest_stale = unix_now() - STALE_SCHEMA_AGE.as_secs() as i64;
    for schema in schemas {
        let made_at = schema[TEST_SCHEMA_PREFIX.len()..]
            .split('_')
            .next()
            .and_then(|seconds| seconds.parse::<i64>().ok());
        if made_at.is_none_or(|seconds| seconds < newest_stale) {
            // Another test process may be dropping it at the same moment (test runners that
            // run each test in a process of its own): whichever fails leaves it to the other.
            let quoted = schema.replace('"', "\"\"");
            if let Err(error) = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{quoted}\" CASCADE"))
                .execute(&mut *admin)
                .await
            {
                eprintln!("test schema {schema} not dropped: {error}");
            }
        }
    }
}

/// Instantiates each named `async fn(TestDb)` once per backend, as `sqlite::NAME` and
/// `postgres::NAME`, so that both stores run one behavioural suite.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::TestDb::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::TestDb::postgres().await).await;
                }
            )*
        }
    };
}

/// A fresh, migrated, empty database: a temporary SQLite file or a PostgreSQL schema.
pub struct TestDb {
    /// The URL a `callfold` process would be given.
    pub url: String,
    /// An open, migrated pool.
    pub store: Store,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A new SQLite file in a temporary folder.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let url = format!("sqlite:{}", dir.path().join("callfold.db").display());
        Self::open(url, Some(dir)).await
    }

    /// The URL of a new, empty schema in the test PostgreSQL database (no migration run).
    /// Its name carries when it was made, so that a later run can drop it (see
    /// [`drop_stale_schemas`]).
    pub async fn unmigrated_postgres_url() -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let base = postgres_base_url();
        let mut admin = sqlx::PgConnection::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {base} is required for the tests: {e}"));
        STALE_SCHEMAS_DROPPED
            .get_or_init(|| drop_stale_schemas(&mut admin))
            .await;
        let schema = format!(
            "{TEST_SCHEMA_PREFIX}{}_{}_{}",
            unix_now(),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .expect("create test schema");
        let separator = if base.contains('?') { '&' } else { '?' };
        format!("{base}{separator}options[search_path]={schema}")
    }

    /// A new schema in the test PostgreSQL database, migrated. Fails (never skips) when
    /// PostgreSQL is not reachable: the PostgreSQL suite is part of the tests.
    pub async fn postgres() -> Self {
        Self::open(Self::unmigrated_postgres_url().await, None).await
    }

    async fn open(url: String, dir: Option<tempfile::TempDir>) -> Self {
        let store = Store::connect(&url).await.expect("connect test store");
        store.migrate().await.expect("migrate test store");
        Self {
            url,
            store,
            _dir: dir,
        }
    }

    /// Blocks every append to the log until the returned guard is released: a second
    /// connection holds the write lock (SQLite) or a table lock (PostgreSQL).
    pub async fn hold_write_lock(&self) -> WriteLock {
        match &self.store {
            Store::Sqlite(_) => {
                let mut connection = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("second SQLite connection");
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut connection)
                    .await
                    .expect("take the write lock");
                WriteLock::Sqlite(connection)
            }
            Store::Postgres(_) => {
                let mut connection = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("second PostgreSQL connection");
                sqlx::query("BEGIN")
                    .execute(&mut connection)
                    .await
                    .expect("begin");
                sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
                    .execute(&mut connection)
                    .await
                    .expect("lock the log");
                WriteLock::Postgres(connection)
            }
        }
    }
}

/// A held write lock; see [`TestDb::hold_write_lock`].
pub enum WriteLock {
    /// Inside `BEGIN IMMEDIATE`.
    Sqlite(sqlx::SqliteConnection),
    /// Inside a transaction holding `LOCK TABLE events`.
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    /// Ends the locking transaction.
    pub async fn release(self) {
        match self {
            WriteLock::Sqlite(mut c) => sqlx::query("ROLLBACK").execute(&mut c).await.map(drop),
            WriteLock::Postgres(mut c) => sqlx::query("ROLLBACK").execute(&mut c).await.map(drop),
        }
        .expect("release the write lock");
    }
}

/// The settings of a test app: the service's defaults, accepting [`SECRET`].
pub fn test_settings() -> Settings {
    test_settings_accepting(SECRET)
}

/// The service's defaults, accepting `secrets` (space or comma separated).
pub fn test_settings_accepting(secrets: &str) -> Settings {
    Settings {
        webhook_secrets: Some(WebhookSecrets::parse(secrets).expect("test secrets")),
        ..Settings::default()
    }
}

/// An [`App`] serving in this process on free loopback ports. Dropping it stops the app
/// without closing the test's store: its tasks end, its connections are cut.
pub struct TestApp {
    /// `http://ADDR` of its public listener.
    pub base_url: String,
    /// `http://ADDR` of its admin listener, when it has one.
    pub admin_url: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    serving: JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// Where the private routes are: the admin listener, else the public one.
    pub fn private_url(&self) -> &str {
        self.admin_url.as_deref().unwrap_or(&self.base_url)
    }

    /// A client of its webhook endpoint (the app serves while `self` lives).
    pub fn receiver(&self) -> TestReceiver {
        TestReceiver::of(&self.base_url)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The shutdown's last step closes the store, which the test goes on using: cut the
        // serving short, then let the app's tasks end.
        self.serving.abort();
        self.shutdown.take();
    }
}

/// Builds the app of `roles` with `settings` over `store`, as the executable does, and serves
/// it on a free loopback port (and a second one for the private routes when `admin` is true),
/// learnt from the bound listeners.
pub async fn spawn_app_on(roles: Roles, settings: Settings, store: &Store, admin: bool) -> TestApp {
    let loopback = "127.0.0.1:0".parse().expect("an address");
    let admin = admin.then_some(loopback);
    let listeners = Listeners::bind(loopback, admin, &settings)
        .await
        .expect("bind loopback");
    let addresses = listeners.addresses(false).expect("bound addresses");
    let app = App::build(roles, settings, store.clone())
        .await
        .expect("the app builds");
    let (shutdown, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(app.serve(listeners, async move {
        let _ = stopped.await;
    }));
    TestApp {
        base_url: format!("http://{}", addresses.listen),
        admin_url: addresses.admin_listen.map(|addr| format!("http://{addr}")),
        shutdown: Some(shutdown),
        serving,
    }
}

/// [`spawn_app_on`] with every route on one listener.
pub async fn spawn_app(roles: Roles, settings: Settings, store: &Store) -> TestApp {
    spawn_app_on(roles, settings, store, false).await
}

/// A client of a webhook endpoint.
#[derive(Clone)]
pub struct TestReceiver {
    /// The full URL of the webhook endpoint.
    pub url: String,
    /// An HTTP client for it.
    pub client: reqwest::Client,
    /// The in-process app behind it, kept serving while a clone of this client lives.
    pub app: Option<Arc<TestApp>>,
}

impl TestReceiver {
    /// A client of the webhook endpoint under `base_url`.
    pub fn of(base_url: &str) -> Self {
        Self {
            url: format!("{base_url}{WEBHOOK_PATH}"),
            client: reqwest::Client::new(),
            app: None,
        }
    }
}

/// Starts an in-process receiver (an app of [`Roles::Ingest`]) on `store` on a free loopback
/// port, configured by `settings` (see [`test_settings`]).
pub async fn start_receiver(store: &Store, settings: Settings) -> TestReceiver {
    let app = spawn_app(Roles::Ingest, settings, store).await;
    let mut receiver = TestReceiver::of(&app.base_url);
    receiver.app = Some(Arc::new(app));
    receiver
}

/// The query API's routes over `store`, with no token and no projector in this process, its
/// live streams polling every 50 ms.
pub fn query_api(store: &Store) -> axum::Router {
    let (_, no_projector_here) = tokio::sync::watch::channel(0);
    let live = LiveChanges::new(store.clone(), no_projector_here, Duration::from_millis(50));
    let calls = Calls::new(store.clone(), Precedence::default());
    callfold_service::query_api::router(calls, live)
}

/// Serves `router` on the service's listener on a free loopback port and returns its base URL.
pub async fn serve_on_loopback(router: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    let limits = Settings::default().connections;
    let forever = std::future::pending();
    tokio::spawn(callfold_service::listener::serve(
        listener, router, limits, None, forever,
    ));
    format!("http://{addr}")
}

/// The receiver's clock, in Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// The `webhook-signature` value for `body` under `secret`.
pub fn signature(secret: &str, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
    let secrets = WebhookSecrets::parse(secret).expect("test secret");
    let secret = secrets.iter().next().expect("one secret");
    let id = WebhookId::parse(webhook_id).expect("test webhook-id");
    sign(secret, &id, timestamp, body)
}

/// An Allo envelope with `topic`, payload time `timestamp` and `data`.
pub fn envelope(topic: &str, timestamp: &str, data: serde_json::Value) -> Vec<u8> {
    serde_json::json!({"topic": topic, "version": "2.0", "timestamp": timestamp, "data": data})
        .to_string()
        .into_bytes()
}

/// What the receiver answered.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The Retry-After header, if any.
    pub retry_after: Option<String>,
    /// The JSON body.
    pub json: serde_json::Value,
}

impl Answer {
    /// Reads a response.
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let json = response.json().await.expect("every answer is JSON");
        Self {
            status,
            retry_after,
            json,
        }
    }

    /// The `seq` of a 200 answer.
    pub fn seq(&self) -> i64 {
        self.json["seq"]
            .as_i64()
            .unwrap_or_else(|| panic!("no seq in {:?}", self.json))
    }
}

impl TestReceiver {
    /// POSTs `body` with exactly the given headers (`None` leaves a header out).
    pub async fn post_raw(&self, headers: &[(&str, Option<&str>)], body: Vec<u8>) -> Answer {
        let mut request = self.client.post(&self.url).body(body);
        for (name, value) in headers {
            if let Some(value) = value {
                request = request.header(*name, *value);
            }
        }
        Answer::read(request.send().await.expect("request reaches the receiver")).await
    }

    /// POSTs `body` as webhook `webhook_id`, signed now with [`SECRET`].
    pub async fn deliver(&self, webhook_id: &str, body: &[u8]) -> Answer {
        self.deliver_signed_by(SECRET, webhook_id, unix_now(), body)
            .await
    }

    /// POSTs `body` as webhook `webhook_id` at `timestamp`, signed with `secret`.
    pub async fn deliver_signed_by(
        &self,
        secret: &str,
        webhook_id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> Answer {
        let signature = signature(secret, webhook_id, timestamp, body);
        let timestamp = timestamp.to_string();
        self.post_raw(
            &[
                ("webhook-id", Some(webhook_id)),
                ("webhook-timestamp", Some(&timestamp)),
                ("webhook-signature", Some(&signature)),
            ],
            body.to_vec(),
        )
        .await
    }
}

/// The `callfold` executable under test.
pub const CALLFOLD: &str = env!("CARGO_BIN_EXE_callfold");

/// A running `callfold` process.
pub struct RunningService {
    /// The child process (killed when dropped).
    pub child: Child,
    /// `http://ADDR` (or `https://ADDR`) of its --listen listener.
    pub base_url: String,
    /// `http://ADDR` of its --admin-listen listener, when it has one.
    pub admin_url: Option<String>,
    /// Everything it has written to stdout and stderr so far.
    output: Arc<Mutex<String>>,
    /// The folder of its address file.
    _addresses: tempfile::TempDir,
}

impl RunningService {
    /// Where the private routes are: the admin listener, else the main one.
    pub fn private_url(&self) -> &str {
        self.admin_url.as_deref().unwrap_or(&self.base_url)
    }

    /// The service's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let response = reqwest::get(format!("{}/metrics", self.private_url()));
        let response = response.await.expect("metrics answer");
        response.text().await.expect("metrics text")
    }

    /// A client of its webhook endpoint.
    pub fn receiver(&self) -> TestReceiver {
        TestReceiver::of(&self.base_url)
    }

    /// Everything the process has written to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }
}

/// `callfold serve` on a new SQLite database, with the database.
pub async fn serve_on_sqlite() -> (TestDb, RunningService) {
    let db = TestDb::sqlite().await;
    let service = start_service("serve", &db.url, &[]).await;
    (db, service)
}

/// Starts `callfold ingest` on a free port against `database_url`.
pub async fn start_ingest(database_url: &str) -> RunningService {
    start_service("ingest", database_url, &[]).await
}

/// Keeps every line `reader` gives in `output`, so that the child never blocks on a full pipe.
fn keep_lines(
    reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    output: &Arc<Mutex<String>>,
) {
    let output = Arc::clone(output);
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut output = output.lock().expect("output lock");
            output.push_str(&line);
            output.push('\n');
        }
    });
}

/// Starts `callfold SUBCOMMAND` on a free port against `database_url`, with `env` added (which
/// may ask for an admin listener and HTTPS), and waits until it has written the addresses it
/// listens on to its `--address-file`. All it writes is kept (see [`RunningService::output`]).
pub async fn start_service(
    subcommand: &str,
    database_url: &str,
    env: &[(&str, &str)],
) -> RunningService {
    let addresses = tempfile::tempdir().expect("temporary folder");
    let address_file = addresses.path().join("addresses.json");
    let mut child = Command::new(CALLFOLD)
        .args([
            subcommand,
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            database_url,
        ])
        .arg("--address-file")
        .arg(&address_file)
        .env("CALLFOLD_WEBHOOK_SECRETS", SECRET)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the callfold executable starts");
    let output = Arc::new(Mutex::new(String::new()));
    keep_lines(child.stdout.take().expect("piped stdout"), &output);
    keep_lines(child.stderr.take().expect("piped stderr"), &output);
    let mut exited = None;
    wait_until("callfold writes its address file", 60, || {
        exited = child.try_wait().expect("child status");
        std::future::ready(exited.is_some() || address_file.exists())
    })
    .await;
    if let Some(status) = exited {
        let output = output.lock().expect("output lock");
        panic!("callfold exited ({status}) before it listened:\n{output}");
    }
    let text = std::fs::read_to_string(&address_file).expect("address file readable");
    let bound: Value = serde_json::from_str(&text).expect("the address file is JSON");
    let scheme = if bound["https"] == Value::Bool(true) {
        "https"
    } else {
        "http"
    };
    let listen = bound["listen"].as_str().expect("listen address");
    RunningService {
        child,
        base_url: format!("{scheme}://{listen}"),
        admin_url: bound["admin_listen"]
            .as_str()
            .map(|addr| format!("http://{addr}")),
        output,
        _addresses: addresses,
    }
}

/// The deliveries of `calls` invented calls (seeded by `seed`), signed with [`SECRET`] now, each
/// once, in a shuffled order.
pub fn signed_deliveries(calls: usize, seed: u64) -> Vec<callfold_simulate::SignedDelivery> {
    let options = SimulateOptions {
        urls: Vec::new(),
        calls,
        concurrency: 1,
        duplicates: 0.0,
        shuffle: true,
        seed,
    };
    let secrets = WebhookSecrets::parse(SECRET).expect("secret");
    let events = callfold_simulate::invent_events(calls, seed, chrono::Utc::now());
    let secret = secrets.iter().next().expect("one");
    callfold_simulate::sign_deliveries(events, secret, unix_now(), &options)
}

/// Waits, for at most `seconds`, until `condition` holds; fails naming `what` otherwise.
pub async fn wait_until<F, Fut>(what: &str, seconds: u64, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits, for at most `seconds`, until `condition` holds of the number of calls waiting to be
/// folded in `store`.
pub async fn wait_for_queue(
    store: &Store,
    what: &str,
    seconds: u64,
    condition: impl Fn(i64) -> bool,
) {
    wait_until(what, seconds, || async {
        condition(store.queue_depth().await.expect("read queue").calls)
    })
    .await;
}

/// What `store` holds as `call`'s projection, if anything (a failed read fails the test).
pub async fn stored_projection(store: &Store, call: &str) -> Option<StoredProjection> {
    store
        .projection(&CallKey::new(call))
        .await
        .expect("read the projection")
}

/// The document of `call_key` folded from scratch from every one of its logged events.
pub async fn fold_from_scratch(store: &Store, call_key: &CallKey) -> String {
    let precedence = Precedence::default();
    let events = store.call_events(call_key).await.expect("read call");
    let folded = fold_events(&precedence, &events)
        .map(|(_, event)| event)
        .collect();
    serde_json::to_string(&fold(call_key.as_str(), folded)).expect("serializes")
}

/// Sends `calls` simulated calls (shuffled, 30% duplicates) through a receiver on `db` and
/// returns the ids of the calls they produced.
pub async fn send_simulated_calls(db: &TestDb, calls: usize, seed: u64) -> BTreeSet<CallKey> {
    let receiver = start_receiver(&db.store, test_settings()).await;
    let options = SimulateOptions {
        urls: vec![receiver.url.clone()],
        calls,
        concurrency: 8,
        duplicates: 0.3,
        shuffle: true,
        seed,
    };
    let secrets = callfold_ingest::WebhookSecrets::parse(SECRET).expect("secret");
    let report = callfold_simulate::run(&options, secrets.iter().next().expect("one")).await;
    let mut call_keys = BTreeSet::new();
    for answer in &report.answers {
        let id = WebhookId::parse(&answer.webhook_id).expect("id");
        let event = db
            .store
            .event_by_webhook_id(&id)
            .await
            .expect("read")
            .expect("logged");
        if let Content::Usable {
            call: CallLink::Linked(call_key),
            ..
        } = event.content
        {
            call_keys.insert(call_key);
        }
    }
    assert_eq!(call_keys.len(), calls);
    call_keys
}

/// Checks each call's projected document against a fold from scratch; returns how many events
/// the projections say they folded, summed over the calls.
pub async fn assert_projections_equal_a_fold_from_scratch(
    store: &Store,
    calls: &BTreeSet<CallKey>,
) -> i64 {
    let mut folded = 0;
    for key in calls {
        let projection = store
            .projection(key)
            .await
            .expect("read")
            .expect("projected");
        assert_eq!(
            projection.document,
            fold_from_scratch(store, key).await,
            "{key:?}"
        );
        let document: Value = serde_json::from_str(&projection.document).expect("json");
        folded += document["event_count"].as_i64().expect("count");
    }
    folded
}

/// A PostgreSQL transaction of its own that holds a lock, so that a statement needing it waits,
/// uncommitted, until [`HeldLock::release`]: how the suites make a lower seq commit after a
/// higher one, or make a read outlast a lease.
pub struct HeldLock {
    connection: sqlx::PgConnection,
    pid: i32,
}

impl HeldLock {
    /// Opens a transaction on the database at `url` and runs `statement` in it, whose locks
    /// the transaction then holds.
    pub async fn take(url: &str, statement: &str) -> Self {
        let mut connection = sqlx::PgConnection::connect(url).await.expect("connect");
        sqlx::query("BEGIN")
            .execute(&mut connection)
            .await
            .expect("begin");
        sqlx::query(statement)
            .execute(&mut connection)
            .await
            .expect("take the lock");
        let pid = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut connection)
            .await
            .expect("pid");
        Self { connection, pid }
    }

    /// Holds the fold-queue mark of `call_key`, which every append to that call updates.
    pub async fn mark_of(url: &str, call_key: &str) -> Self {
        let statement =
            format!("SELECT call_key FROM calls_to_fold WHERE call_key = '{call_key}' FOR UPDATE");
        Self::take(url, &statement).await
    }

    /// Waits until another session of `store` waits on this lock.
    pub async fn wait_for_a_waiter(&self, store: &Store, what: &str) {
        self.wait_for_waiters(store, 1, what).await;
    }

    /// Waits until `count` sessions of `store` wait on this lock, directly or behind another
    /// session that waits on it.
    pub async fn wait_for_waiters(&self, store: &Store, count: i64, what: &str) {
        let Store::Postgres(pools) = store else {
            unreachable!("a lock held on PostgreSQL is waited on from PostgreSQL")
        };
        let observer = &pools.readers;
        wait_until(what, 20, || async {
            let blocked: i64 = sqlx::query_scalar(
                "WITH RECURSIVE behind(pid) AS ( \
                     SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)) \
                     UNION SELECT a.pid FROM pg_stat_activity a \
                     JOIN behind b ON b.pid = ANY(pg_blocking_pids(a.pid))) \
                 SELECT count(*) FROM behind",
            )
            .bind(self.pid)
            .fetch_one(observer)
            .await
            .expect("pg_stat_activity");
            blocked >= count
        })
        .await;
    }

    /// Commits, letting whoever waits on the lock go on.
    pub async fn release(mut self) {
        sqlx::query("COMMIT")
            .execute(&mut self.connection)
            .await
            .expect("release");
    }
}

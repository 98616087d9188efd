//! The production topology: several receivers and several projector workers on one database.
//! Commits that become visible out of seq order, an append beside a settle that waits for the
//! change counter, one webhook-id delivered to two receivers at once, real processes killed
//! mid-run, and PostgreSQL unreachable for 30 s under load.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use callfold_projector::{Precedence, Projector};
use callfold_simulate::{SignedDelivery, SimulateOptions, invent_events, sign_deliveries};
use callfold_store::{CallKey, QueueSweep, Store, WebhookId};
use serde_json::json;
use support::{
    HeldLock, LEASE, SECRET, TestDb, assert_projections_equal_a_fold_from_scratch, envelope,
    start_receiver, start_service, test_settings, wait_for_queue, wait_until,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Folds until no call is left to claim.
async fn catch_up(projector: &Projector) {
    while projector.fold_next_batch().await.expect("fold a batch") > 0 {}
}

fn completed(call: &str) -> Vec<u8> {
    envelope(
        "call.completed",
        "2026-02-10T09:17:42Z",
        json!({"id": call, "type": "INBOUND", "result": "ANSWERED"}),
    )
}

fn tagged(call: &str, tag: &str) -> Vec<u8> {
    envelope(
        "tag.added",
        "2026-02-10T09:20:00Z",
        json!({"call_id": call, "tag": tag}),
    )
}

/// The seq at which `webhook_id` was logged.
async fn seq_of(store: &Store, webhook_id: &str) -> i64 {
    let id = WebhookId::parse(webhook_id).expect("id");
    store
        .event_by_webhook_id(&id)
        .await
        .expect("read")
        .expect("logged")
        .seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_after_a_later_seq_was_folded_is_still_projected() {
    let db = TestDb::postgres().await;
    let store = db.store.clone();
    // Two receivers, as two processes: each commits on its own.
    let receiver = start_receiver(&store, test_settings()).await;
    let other_receiver = start_receiver(&store, test_settings()).await;
    let projector = Projector::new(store.clone(), Precedence::default(), 100, LEASE);
    // Call A is waiting to be folded; another connection holds its queue row, so the next
    // append of A takes its seq, then waits inside its transaction to mark A.
    assert_eq!(
        receiver.deliver("msg_a1", &completed("cll_a")).await.status,
        200
    );
    let held = HeldLock::mark_of(&db.url, "cll_a").await;
    let lower = {
        let receiver = receiver.clone();
        tokio::spawn(async move { receiver.deliver("msg_a2", &tagged("cll_a", "vip")).await })
    };
    held.wait_for_a_waiter(&store, "the append of A waits on the held mark")
        .await;

    // A later append commits and is folded while the lower seq is still uncommitted.
    let later = other_receiver.deliver("msg_b1", &completed("cll_b")).await;
    assert_eq!(later.status, 200);
    catch_up(&projector).await;
    assert!(support::stored_projection(&store, "cll_b").await.is_some());
    let a_before = support::stored_projection(&store, "cll_a").await;
    assert_eq!(a_before, None, "A's fold waits for its held mark");

    held.release().await;
    let lower = lower.await.expect("append task");
    assert_eq!(lower.status, 200, "{}", lower.json);
    assert!(
        seq_of(&store, "msg_a2").await < seq_of(&store, "msg_b1").await,
        "the event committed last holds the lower seq"
    );
    catch_up(&projector).await;
    let a = support::stored_projection(&store, "cll_a")
        .await
        .expect("A projected");
    assert_eq!(a.events_folded, 2, "the late-committed event is folded");
    let document: serde_json::Value = serde_json::from_str(&a.document).expect("json");
    assert_eq!(document["tags"], json!(["vip"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_does_not_wait_for_a_settle_that_waits_for_the_change_counter() {
    let db = TestDb::postgres().await;
    let store = db.store.clone();
    let receiver = start_receiver(&store, test_settings()).await;
    let projector = Projector::new(store.clone(), Precedence::default(), 100, LEASE);
    assert_eq!(
        receiver.deliver("msg_c1", &completed("cll_c")).await.status,
        200
    );
    // Another connection holds the change counter, as a rebuild's swap does for a batch, so
    // the worker's settle waits for it.
    let counter = HeldLock::take(
        &db.url,
        "UPDATE projection_changes SET last_change = last_change WHERE only_row = 1",
    )
    .await;
    let worker = {
        let projector = projector.clone();
        tokio::spawn(async move { projector.fold_next_batch().await.expect("fold") })
    };
    counter
        .wait_for_a_waiter(&store, "the settle waits for the change counter")
        .await;

    // An append to the call being settled is acknowledged while the counter is still held.
    let append = receiver.deliver("msg_c2", &tagged("cll_c", "vip")).await;
    assert_eq!(append.status, 200, "{}", append.json);

    counter.release().await;
    assert_eq!(worker.await.expect("worker task"), 1);
    catch_up(&projector).await;
    let projection = support::stored_projection(&store, "cll_c")
        .await
        .expect("projected");
    assert_eq!(projection.events_folded, 2, "the append is folded too");
    assert_eq!(store.queue_depth().await.expect("depth").calls, 0);
}

async fn one_id_sent_to_two_receivers_at_once_is_stored_once_and_both_answer_200(db: TestDb) {
    let second_pool = Store::connect(&db.url).await.expect("second pool");
    let first = start_receiver(&db.store, test_settings()).await;
    let second = start_receiver(&second_pool, test_settings()).await;
    for n in 0..40 {
        let (id, body) = (format!("msg_twice_{n}"), completed(&format!("cll_{n}")));
        let (a, b) = tokio::join!(first.deliver(&id, &body), second.deliver(&id, &body));
        assert_eq!((a.status, b.status), (200, 200), "{id}");
        let statuses = BTreeSet::from([a.json["status"].to_string(), b.json["status"].to_string()]);
        let expected = ["\"accepted\"".to_owned(), "\"duplicate\"".to_owned()];
        assert_eq!(statuses, BTreeSet::from(expected), "{id}");
        assert_eq!(
            a.json["seq"], b.json["seq"],
            "both name the one stored copy"
        );
    }
    assert_eq!(db.store.log_len().await.expect("len"), 40);
}

async fn a_worker_that_joins_takes_the_calls_the_others_do_not_hold(db: TestDb) {
    let receiver = start_receiver(&db.store, test_settings()).await;
    for n in 0..10 {
        let call = format!("cll_share_{n}");
        let answer = receiver
            .deliver(&format!("msg_share_{n}"), &completed(&call))
            .await;
        assert_eq!(answer.status, 200);
    }
    // A running worker holds four calls it has not settled yet.
    let held = db
        .store
        .claim_calls(&QueueSweep::default(), 4, LEASE)
        .await
        .expect("claim");
    assert_eq!(held.claims.len(), 4);
    // A worker that starts now takes the other six, and only those.
    let newcomer = Projector::new(db.store.clone(), Precedence::default(), 100, LEASE);
    assert_eq!(newcomer.fold_next_batch().await.expect("fold"), 6);
    assert_eq!(newcomer.fold_next_batch().await.expect("fold"), 0);
    for claim in &held.claims {
        let projected = db.store.projection(&claim.call_key).await.expect("read");
        assert_eq!(
            projected, None,
            "{:?} belongs to the first worker",
            claim.call_key
        );
    }
    assert_eq!(
        db.store
            .list_projections(None, 100)
            .await
            .expect("list")
            .len(),
        6
    );
}

on_both_stores!(
    one_id_sent_to_two_receivers_at_once_is_stored_once_and_both_answer_200,
    a_worker_that_joins_takes_the_calls_the_others_do_not_hold,
);

/// The projections of every call, keyed by call, without the time they were written.
async fn projections_without_update_times(store: &Store) -> BTreeMap<CallKey, (String, i64)> {
    store
        .list_projections(None, i64::MAX)
        .await
        .expect("list")
        .into_iter()
        .map(|p| (p.call_key, (p.document, p.events_folded)))
        .collect()
}

/// Checks that every acknowledged delivery is logged, once, and that the projections equal a
/// fresh rebuild and a fold from scratch.
async fn assert_nothing_acknowledged_lost_and_projections_rebuildable(
    store: &Store,
    acknowledged: &BTreeSet<String>,
) {
    for id in acknowledged {
        seq_of(store, id).await;
    }
    let logged = store.log_len().await.expect("len");
    assert_eq!(
        logged as usize,
        acknowledged.len(),
        "each id logged exactly once"
    );
    let folded = projections_without_update_times(store).await;
    let projector = Projector::new(store.clone(), Precedence::default(), 100, LEASE);
    projector.rebuild(|_, _| {}).await.expect("rebuild");
    assert_eq!(projections_without_update_times(store).await, folded);
    let calls: BTreeSet<CallKey> = folded.into_keys().collect();
    assert_projections_equal_a_fold_from_scratch(store, &calls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_receivers_and_two_workers_as_processes_survive_a_killed_worker() {
    let url = TestDb::unmigrated_postgres_url().await;
    let workers = [
        ("CALLFOLD_PROJECTOR_BATCH", "8"),
        ("CALLFOLD_CLAIM_LEASE_MS", "1000"),
    ];
    // Projectors first, receivers after: any order works, and all four migrate at once.
    let (mut doomed, survivor, first, second) = tokio::join!(
        start_service("projector", &url, &workers),
        start_service("projector", &url, &workers),
        start_service("ingest", &url, &[]),
        start_service("ingest", &url, &[]),
    );
    let store = Store::connect(&url).await.expect("connect");
    let urls = vec![
        format!("{}/webhooks/allo", first.base_url),
        format!("{}/webhooks/allo", second.base_url),
    ];
    let options = SimulateOptions {
        urls,
        calls: 600,
        concurrency: 16,
        duplicates: 0.3,
        shuffle: true,
        seed: 41,
    };
    let secrets = callfold_ingest::WebhookSecrets::parse(SECRET).expect("secret");
    let load = {
        let options = options.clone();
        tokio::spawn(async move {
            let secret = secrets.iter().next().expect("one secret");
            callfold_simulate::run(&options, secret).await
        })
    };
    wait_until("some calls are projected", 60, || {
        let store = store.clone();
        async move {
            !store
                .list_projections(None, 1)
                .await
                .expect("list")
                .is_empty()
        }
    })
    .await;
    assert!(!load.is_finished(), "the load is still running at the kill");
    doomed.child.start_kill().expect("SIGKILL");
    doomed.child.wait().await.expect("reaped");
    let report = load.await.expect("load finished");
    let labels: BTreeSet<&str> = report.counts().into_keys().collect();
    assert!(
        labels.is_subset(&BTreeSet::from(["accepted", "duplicate"])),
        "{report}"
    );
    let acknowledged: BTreeSet<String> = report
        .answers
        .iter()
        .filter(|answer| answer.seq.is_some())
        .map(|answer| answer.webhook_id.clone())
        .collect();
    assert_eq!(
        report.counts().get("accepted"),
        Some(&acknowledged.len()),
        "{report}"
    );
    wait_for_queue(&store, "every call is folded", 60, |calls| calls == 0).await;
    drop(survivor);
    assert_nothing_acknowledged_lost_and_projections_rebuildable(&store, &acknowledged).await;
}

/// A TCP relay in front of PostgreSQL that can be cut: while cut, it has closed every relayed
/// connection and closes each new one at once, as a stopped server does.
struct CuttableRelay {
    addr: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<JoinSet<()>>>,
}

impl CuttableRelay {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let cut = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let (is_cut, relayed) = (Arc::clone(&cut), Arc::clone(&connections));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if is_cut.load(Ordering::SeqCst) {
                    continue;
                }
                let upstream = upstream.clone();
                relayed.lock().expect("lock").spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self {
            addr,
            cut,
            connections,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.connections.lock().expect("lock").abort_all();
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// How long PostgreSQL is away in the outage test.
const OUTAGE: Duration = Duration::from_secs(30);

/// The signed deliveries of 2,000 invented calls (a fifth sent twice, shuffled), for the
/// receiver at `receiver_url`, and the endpoints they go to.
fn outage_load(receiver_url: &str) -> (Vec<String>, Vec<SignedDelivery>) {
    let options = SimulateOptions {
        urls: vec![format!("{receiver_url}/webhooks/allo")],
        calls: 2000,
        concurrency: 4,
        duplicates: 0.2,
        shuffle: true,
        seed: 51,
    };
    let secrets = callfold_ingest::WebhookSecrets::parse(SECRET).expect("secret");
    let secret = secrets.iter().next().expect("one secret");
    let now = chrono::Utc::now();
    let deliveries = sign_deliveries(
        invent_events(options.calls, options.seed, now),
        secret,
        now.timestamp(),
        &options,
    );
    (options.urls, deliveries)
}

/// Cuts the receiver at `receiver_url` off its database (through `relay`) for [`OUTAGE`],
/// once it reports the database gone, then restores it and waits until it reconnects by
/// itself.
async fn cut_the_database_for_the_outage(relay: &CuttableRelay, receiver_url: &str) {
    relay.cut();
    let ready = || async {
        let response = reqwest::get(format!("{receiver_url}/readyz")).await;
        response.expect("the receiver answers").status().as_u16()
    };
    wait_until("the receiver reports the database gone", 10, || async {
        ready().await == 503
    })
    .await;
    tokio::time::sleep(OUTAGE).await;
    relay.restore();
    wait_until("the receiver reconnects by itself", 30, || async {
        ready().await == 200
    })
    .await;
}

/// As Allo does: sends to `urls` again whatever of `deliveries` `answers` did not
/// acknowledge, until all are (at most 10 rounds); returns the webhook-ids acknowledged.
async fn resend_until_acknowledged(
    urls: &[String],
    deliveries: &[SignedDelivery],
    mut answers: Vec<callfold_simulate::Answer>,
) -> BTreeSet<String> {
    for _round in 0..10 {
        let acknowledged: BTreeSet<&str> = answers
            .iter()
            .filter(|a| a.seq.is_some())
            .map(|a| a.webhook_id.as_str())
            .collect();
        let retry: Vec<SignedDelivery> = deliveries
            .iter()
            .filter(|d| !acknowledged.contains(d.webhook_id.as_str()))
            .cloned()
            .collect();
        if retry.is_empty() {
            break;
        }
        answers.extend(callfold_simulate::send(urls, retry, 4).await.answers);
    }
    answers
        .iter()
        .filter(|a| a.seq.is_some())
        .map(|a| a.webhook_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_away_for_30_seconds_under_load_loses_nothing_acknowledged() {
    let db = TestDb::postgres().await;
    let direct = sqlx::postgres::PgConnectOptions::from_str(&db.url).expect("URL");
    let upstream = format!("{}:{}", direct.get_host(), direct.get_port());
    let relay = CuttableRelay::start(upstream.clone()).await;
    let relayed_url = db.url.replacen(&upstream, &relay.addr.to_string(), 1);
    assert_ne!(relayed_url, db.url);
    let quick = [
        ("CALLFOLD_DB_ACQUIRE_TIMEOUT_MS", "1000"),
        ("CALLFOLD_CLAIM_LEASE_MS", "1000"),
        ("CALLFOLD_POLL_INTERVAL_MS", "100"),
    ];
    let receiver = start_service("ingest", &relayed_url, &quick).await;
    let _projector = start_service("projector", &relayed_url, &quick).await;

    let (urls, deliveries) = outage_load(&receiver.base_url);
    let load = {
        let (urls, deliveries) = (urls.clone(), deliveries.clone());
        tokio::spawn(async move { callfold_simulate::send(&urls, deliveries, 4).await })
    };
    wait_until("the load reaches the log", 30, || {
        let store = db.store.clone();
        async move { store.log_len().await.expect("len") > 200 }
    })
    .await;
    assert!(!load.is_finished(), "the outage starts under load");
    cut_the_database_for_the_outage(&relay, &receiver.base_url).await;

    let answers = load.await.expect("load finished").answers;
    let labels: BTreeSet<String> = answers.iter().map(|a| a.label.clone()).collect();
    assert!(
        labels.contains("http 503"),
        "the outage was met with 503s: {labels:?}"
    );
    let allowed = ["accepted", "duplicate", "http 503"].map(str::to_owned);
    assert!(labels.is_subset(&BTreeSet::from(allowed)), "{labels:?}");
    let acknowledged = resend_until_acknowledged(&urls, &deliveries, answers).await;
    let sent: BTreeSet<String> = deliveries.iter().map(|d| d.webhook_id.clone()).collect();
    assert_eq!(
        acknowledged, sent,
        "every delivery acknowledged after the retries"
    );
    let every_call_folded = "the projector resumes and folds every call";
    wait_for_queue(&db.store, every_call_folded, 60, |calls| calls == 0).await;
    assert_nothing_acknowledged_lost_and_projections_rebuildable(&db.store, &acknowledged).await;
}

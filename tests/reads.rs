//! The read side never stands in the way of the write side: on SQLite a read does not wait for
//! the connection that commits appends.

mod support;

use callfold_ingest::LinkingRules;
use callfold_store::{EventTime, NewEvent, Store, WebhookId};
use serde_json::json;
use sha2::{Digest, Sha256};
use support::{TestDb, envelope};

/// A delivery of `body`, read with the default linking rules.
fn delivery(id: &str, body: &[u8]) -> NewEvent {
    NewEvent {
        webhook_id: WebhookId::parse(id).expect("test id"),
        webhook_timestamp: 1_770_715_062,
        received_at: EventTime::now(),
        body: body.to_vec(),
        body_sha256: Sha256::digest(body).into(),
        content: LinkingRules::default().read(body),
    }
}

fn call_event(topic: &str, second: u32, call_id: &str) -> Vec<u8> {
    envelope(
        topic,
        &format!("2026-02-10T09:17:{second:02}Z"),
        json!({"id": call_id, "call_id": call_id}),
    )
}

/// While an append holds SQLite's write connection (it waits for another process's write
/// lock), the operators' counts and a query still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reads_do_not_wait_for_the_write_connection() {
    let db = TestDb::sqlite().await;
    let Store::Sqlite(pools) = &db.store else {
        unreachable!("a SQLite test database")
    };
    let lock = db.hold_write_lock().await;
    let store = db.store.clone();
    let append = tokio::spawn(async move {
        store
            .append_batch(&[delivery("msg_1", &call_event("call.received", 1, "cll_1"))])
            .await
    });
    support::wait_until("the append holds the write connection", 10, || async {
        pools.writer.size() == 1 && pools.writer.num_idle() == 0
    })
    .await;
    let stats = db
        .store
        .stats()
        .await
        .expect("counts while an append waits");
    assert_eq!(stats.log_events, 0);
    let (unlinked, _) = db.store.unlinked_events(0, 10).await.expect("a list");
    assert!(unlinked.is_empty());
    assert!(!append.is_finished(), "the append was still waiting");
    lock.release().await;
    append.await.expect("join").expect("append after the lock");
    assert_eq!(db.store.stats().await.expect("stats").log_events, 1);
}

//! The lists of kept records (`/v1/quarantine`, `/v1/unlinked`) page in commit order: a record
//! that commits after a page was read is on a later page, even when its `seq` is lower than
//! the page's last one (which happens on PostgreSQL with several writers).

mod support;

use callfold_ingest::{LinkingRules, Quarantine};
use callfold_projector::{Calls, Precedence};
use callfold_store::{KeptPosition, NewEvent, PageParams, Store};
use serde_json::{Value, json};
use support::{HeldLock, TestDb, as_received, commit_timeout, envelope};

fn quarantined(webhook_id: &str) -> NewEvent {
    as_received(webhook_id, b"not json")
}

fn unlinked(webhook_id: &str) -> NewEvent {
    let data = json!({"from_number": "+33612345670", "to_number": "+33199"});
    as_received(
        webhook_id,
        &envelope("call.received", "2026-02-10T09:00:00Z", data),
    )
}

fn completed(webhook_id: &str, call: &str) -> NewEvent {
    let data = json!({"id": call, "type": "INBOUND", "result": "ANSWERED"});
    as_received(
        webhook_id,
        &envelope("call.completed", "2026-02-10T09:17:42Z", data),
    )
}

/// The page of at most `limit` items after `after` (a `next`), as a user would ask for it.
fn page(limit: u32, after: Option<&Value>) -> PageParams<KeptPosition> {
    let after = after.map(Value::to_string);
    PageParams::parse(Some(&limit.to_string()), after.as_deref()).expect("a page")
}

/// The quarantine list's page of at most `limit` records after `after`, as JSON.
async fn quarantine_page(store: &Store, limit: u32, after: Option<&Value>) -> Value {
    let listed = Quarantine::new(store.clone(), LinkingRules::default(), commit_timeout())
        .list(&page(limit, after))
        .await
        .expect("list the quarantine");
    serde_json::to_value(listed).expect("JSON")
}

/// The unlinked list's page of at most `limit` events after `after`, as JSON.
async fn unlinked_page(store: &Store, limit: u32, after: Option<&Value>) -> Value {
    let listed = Calls::new(store.clone(), Precedence::default())
        .unlinked(&page(limit, after))
        .await
        .expect("list unlinked events");
    serde_json::to_value(listed).expect("JSON")
}

/// The webhook-ids of a page's `items` (`records` or `events`).
fn ids<'a>(page: &'a Value, items: &str) -> Vec<&'a str> {
    page[items]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["webhook_id"].as_str().expect("id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_record_committed_after_a_higher_seq_was_listed_is_on_the_next_page() {
    let db = TestDb::postgres().await;
    let store = db.store.clone();
    // Call X is marked; another connection holds its mark, so an append that touches X takes
    // its seqs, then waits inside its transaction.
    store
        .append_batch(&[completed("msg_x1", "cll_x")])
        .await
        .expect("append");
    let held = HeldLock::mark_of(&db.url, "cll_x").await;
    let lower = {
        let store = store.clone();
        tokio::spawn(async move {
            let batch = [
                quarantined("msg_q_low"),
                unlinked("msg_u_low"),
                completed("msg_x2", "cll_x"),
            ];
            store.append_batch(&batch).await.expect("append")
        })
    };
    held.wait_for_a_waiter(&store, "the lower seqs' append waits on the held mark")
        .await;

    // Higher seqs commit and are listed while the lower ones are still uncommitted.
    store
        .append_batch(&[quarantined("msg_q_high"), unlinked("msg_u_high")])
        .await
        .expect("append");
    let quarantine_first = quarantine_page(&store, 1, None).await;
    let unlinked_first = unlinked_page(&store, 1, None).await;
    assert_eq!(ids(&quarantine_first, "records"), ["msg_q_high"]);
    assert_eq!(ids(&unlinked_first, "events"), ["msg_u_high"]);

    held.release().await;
    lower.await.expect("append task");
    let seq = |page: &Value, items: &str| page[items][0]["seq"].as_i64().expect("seq");
    let quarantine_next = quarantine_page(&store, 1, Some(&quarantine_first["next"])).await;
    let unlinked_next = unlinked_page(&store, 1, Some(&unlinked_first["next"])).await;
    assert_eq!(ids(&quarantine_next, "records"), ["msg_q_low"]);
    assert_eq!(ids(&unlinked_next, "events"), ["msg_u_low"]);
    assert!(
        seq(&quarantine_next, "records") < seq(&quarantine_first, "records")
            && seq(&unlinked_next, "events") < seq(&unlinked_first, "events"),
        "the records committed last hold the lower seqs"
    );
}

async fn kept_records_page_by_position_without_gaps_or_repeats(db: TestDb) {
    let store = &db.store;
    for n in 0..3 {
        let batch = [
            quarantined(&format!("msg_q_{n}")),
            unlinked(&format!("msg_u_{n}")),
            completed(&format!("msg_c_{n}"), "cll_paged"),
        ];
        store.append_batch(&batch).await.expect("append");
    }
    // Each item's position is a cursor: resuming after the first item gives the rest.
    let first = quarantine_page(store, 1, None).await;
    assert_eq!(first["total"], 3);
    let rest = quarantine_page(store, 10, Some(&first["records"][0]["position"])).await;
    assert_eq!(ids(&rest, "records"), ["msg_q_1", "msg_q_2"]);
    assert_eq!(rest["next"], Value::Null);

    let first = unlinked_page(store, 2, None).await;
    assert_eq!(first["total"], 3);
    assert_eq!(first["next"], first["events"][1]["position"]);
    let rest = unlinked_page(store, 2, Some(&first["next"])).await;
    let mut listed = ids(&first, "events");
    listed.extend(ids(&rest, "events"));
    assert_eq!(listed, ["msg_u_0", "msg_u_1", "msg_u_2"]);
    assert_eq!(rest["next"], Value::Null);
}

on_both_stores!(kept_records_page_by_position_without_gaps_or_repeats);

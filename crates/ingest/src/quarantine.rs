//! The records the receiver kept but could not use, for operators: listing the quarantined
//! ones, showing one with its raw body and reason, and re-driving a kept record (quarantined,
//! or unlinked) through the append path once a fix makes it usable, for instance a new linking
//! rule. Shared by the HTTP API and the CLI, so both answer alike: the listed and shown
//! records are typed views ([`QuarantinedRecord`], [`KeptRecordDetail`]), their JSON keys in
//! alphabetical order, the order they have always had (the README documents them).
//!
//! The log is append-only, so a re-drive never changes the kept record: it appends a new record
//! with the same body under the webhook-id `redrive:{seq}`, which makes re-driving idempotent
//! (a second re-drive of the same record is a duplicate of the first).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use callfold_store::{
    AppendOutcome, BadParameter, EventTime, KeptPosition, KeptRecord, Listed, LoggedEvent,
    NewEvent, Page, PageParams, Store, StoreError, WebhookId,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::envelope::LinkingRules;

/// Why an operator's request about kept records has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// A parameter does not parse; the message names it.
    #[error("bad parameter {name}: {problem}")]
    BadParameter {
        /// The parameter's name.
        name: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// No record has this seq.
    #[error("no record with seq {0}")]
    NotFound(i64),
    /// The record is neither quarantined nor unlinked: there is nothing to re-drive.
    #[error("record {0} was usable when it arrived; there is nothing to re-drive")]
    NotKept(i64),
    /// Read with the current rules, the record is still not usable.
    #[error("record {seq} is still unusable: {reason}")]
    StillUnusable {
        /// The record.
        seq: i64,
        /// Why, as of the current rules.
        reason: String,
    },
    /// The store failed.
    #[error("the store is unavailable")]
    Store(#[from] StoreError),
}

impl From<BadParameter> for QuarantineError {
    fn from(BadParameter { name, problem }: BadParameter) -> Self {
        QuarantineError::BadParameter { name, problem }
    }
}

/// A quarantined record, as listed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct QuarantinedRecord {
    /// Its place in the list of quarantined records: a cursor for `after`.
    pub position: i64,
    /// Why it could not be used.
    pub reason: Option<String>,
    /// When the receiver got it.
    pub received_at: EventTime,
    /// The seq of its re-drive, if it was re-driven.
    pub redriven_as: Option<i64>,
    /// Its place in the log.
    pub seq: i64,
    /// Its webhook-id.
    pub webhook_id: String,
}

impl Listed for QuarantinedRecord {
    const ITEMS: &'static str = "records";
    type Cursor = KeptPosition;

    fn cursor(&self) -> KeptPosition {
        KeptPosition(self.position)
    }
}

/// One kept record in full.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeptRecordDetail {
    /// Its raw body as text, when it is UTF-8.
    pub body: Option<String>,
    /// Its raw body, base64-encoded.
    pub body_base64: String,
    /// Why it could not be used; none when it was usable.
    pub reason: Option<String>,
    /// When the receiver got it.
    pub received_at: EventTime,
    /// The seq of its re-drive, if it was re-driven.
    pub redriven_as: Option<i64>,
    /// Its place in the log.
    pub seq: i64,
    /// Whether it is a call event that named no call the linking rules could find.
    pub unlinked: bool,
    /// Its webhook-id.
    pub webhook_id: String,
    /// Its `webhook-timestamp` header, in Unix seconds.
    pub webhook_timestamp: i64,
}

/// The operators' view of kept records.
#[derive(Clone, Debug)]
pub struct Quarantine {
    store: Store,
    linking_rules: LinkingRules,
    commit_timeout: Duration,
}

/// The webhook-id a re-drive of record `seq` appends under.
fn redrive_id(seq: i64) -> WebhookId {
    WebhookId::parse(&format!("redrive:{seq}")).expect("a short printable id")
}

impl Quarantine {
    /// The view over `store`, re-driving with `linking_rules`; a re-drive must commit within
    /// `commit_timeout`, like the receiver's appends.
    pub fn new(store: Store, linking_rules: LinkingRules, commit_timeout: Duration) -> Self {
        Self {
            store,
            linking_rules,
            commit_timeout,
        }
    }

    /// Quarantined records after position `page.after` of the list, in the order they were
    /// committed, with how many there are; each gives its `position` (a cursor for `after`),
    /// and says whether it was re-driven, and as which seq.
    pub async fn list(
        &self,
        page: &PageParams<KeptPosition>,
    ) -> Result<Page<QuarantinedRecord>, QuarantineError> {
        let after = page.after.map_or(0, |KeptPosition(position)| position);
        let limit = page.limit.get() as i64;
        let (records, total) = self.store.quarantined_events(after, limit).await?;
        let mut listed = Vec::with_capacity(records.len());
        for KeptRecord { position, record } in records {
            listed.push(QuarantinedRecord {
                position,
                reason: record.content.quarantine_reason().map(str::to_owned),
                received_at: record.received_at,
                redriven_as: self.redriven_as(record.seq).await?,
                seq: record.seq,
                webhook_id: record.webhook_id.as_str().to_owned(),
            });
        }
        Ok(Page::new(listed, page.limit, Some(total)))
    }

    /// One kept record in full: its headers' values, its reason (none when it was usable), and
    /// its raw body, as text when it is UTF-8 and always as base64.
    pub async fn show(&self, seq: i64) -> Result<KeptRecordDetail, QuarantineError> {
        let record = self.record(seq).await?;
        Ok(KeptRecordDetail {
            body: String::from_utf8(record.body.clone()).ok(),
            body_base64: STANDARD.encode(&record.body),
            reason: record.content.quarantine_reason().map(str::to_owned),
            received_at: record.received_at,
            redriven_as: self.redriven_as(seq).await?,
            seq: record.seq,
            unlinked: record.content.is_unlinked(),
            webhook_id: record.webhook_id.as_str().to_owned(),
            webhook_timestamp: record.webhook_timestamp,
        })
    }

    /// Reads record `seq` again with the current linking rules and, when it is now usable (and
    /// linked to a call, for a call event), appends it as `redrive:{seq}`: `{"status":
    /// "redriven" | "already_redriven", "seq": N, "webhook_id": ...}`. A re-drive whose content
    /// the store refuses is kept quarantined, and is still unusable.
    pub async fn redrive(&self, seq: i64) -> Result<Value, QuarantineError> {
        let record = self.record(seq).await?;
        let was_kept = record.content.quarantine_reason().is_some() || record.content.is_unlinked();
        if !was_kept {
            return Err(QuarantineError::NotKept(seq));
        }
        let content = self.linking_rules.read(&record.body);
        let still = match content.quarantine_reason() {
            Some(reason) => Some(reason.to_owned()),
            None if content.is_unlinked() => Some("no linking rule finds its call id".to_owned()),
            None => None,
        };
        if let Some(reason) = still {
            return Err(QuarantineError::StillUnusable { seq, reason });
        }
        let webhook_id = redrive_id(seq);
        let event = NewEvent {
            webhook_id: webhook_id.clone(),
            webhook_timestamp: record.webhook_timestamp,
            received_at: EventTime::now(),
            body_sha256: Sha256::digest(&record.body).into(),
            body: record.body,
            content,
        };
        let outcomes = self
            .store
            .append_batch_within(std::slice::from_ref(&event), self.commit_timeout)
            .await?;
        let outcome = outcomes.first().expect("one outcome per event appended");
        let (status, new_seq) = match *outcome {
            AppendOutcome::Appended { seq } => ("redriven", seq),
            // The store may have kept this re-drive, or an earlier one, quarantined.
            AppendOutcome::Quarantined { seq: new_seq }
            | AppendOutcome::Duplicate { seq: new_seq, .. } => {
                let kept = self.record(new_seq).await?;
                if let Some(reason) = kept.content.quarantine_reason() {
                    let reason = reason.to_owned();
                    return Err(QuarantineError::StillUnusable { seq, reason });
                }
                ("already_redriven", new_seq)
            }
        };
        tracing::info!(seq, new_seq, "record re-driven");
        Ok(json!({ "status": status, "seq": new_seq, "webhook_id": webhook_id.as_str() }))
    }

    async fn record(&self, seq: i64) -> Result<LoggedEvent, QuarantineError> {
        self.store
            .event_by_seq(seq)
            .await?
            .ok_or(QuarantineError::NotFound(seq))
    }

    /// The seq of the re-drive of record `seq`, if it was re-driven.
    async fn redriven_as(&self, seq: i64) -> Result<Option<i64>, QuarantineError> {
        let redriven = self.store.event_by_webhook_id(&redrive_id(seq)).await?;
        Ok(redriven.map(|record| record.seq))
    }
}

//! The deliveries the receiver refused before they proved to be Allo's: counted by reason, and
//! the most recent kept in a bounded list (when, from where, why; never a body), so that an
//! operator sees what is knocking without anyone being able to fill memory or disk with it;
//! each is also warned of in the log, rate-limited ([`crate::refusal_warnings`]).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use callfold_store::EventTime;

use crate::refusal_warnings::RefusalWarnings;
use serde::Serialize;
use serde_json::{Value, json};

/// How many refused requests are remembered.
pub const RECENT_REJECTIONS: usize = 100;

/// One refused request.
#[derive(Clone, Debug, Serialize)]
struct Rejected {
    at: EventTime,
    source: Option<SocketAddr>,
    reason: &'static str,
}

#[derive(Debug, Default)]
struct Ledger {
    counts: BTreeMap<&'static str, u64>,
    recent: VecDeque<Rejected>,
    warnings: RefusalWarnings,
}

/// Refused requests of this process: counts by reason and the latest few. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct RecentRejections(Arc<Mutex<Ledger>>);

impl RecentRejections {
    /// Notes a request from `source` refused for `reason`, and warns of it in the log (at most
    /// once per reason per [`crate::refusal_warnings::WARNING_INTERVAL`]).
    pub fn record(&self, reason: &'static str, source: Option<SocketAddr>) {
        let mut ledger = self.0.lock().unwrap_or_else(|e| e.into_inner());
        ledger.warnings.warn(reason, source);
        *ledger.counts.entry(reason).or_default() += 1;
        if ledger.recent.len() == RECENT_REJECTIONS {
            ledger.recent.pop_front();
        }
        let at = EventTime::now();
        ledger.recent.push_back(Rejected { at, source, reason });
    }

    /// `{"counts": {reason: n}, "recent": [{at, source, reason}]}`, the latest first.
    pub fn summary(&self) -> Value {
        let ledger = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let recent: Vec<&Rejected> = ledger.recent.iter().rev().collect();
        json!({ "counts": ledger.counts, "recent": recent })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_keeps_only_the_latest_while_the_counts_keep_everything() {
        let rejections = RecentRejections::default();
        for _ in 0..RECENT_REJECTIONS + 50 {
            rejections.record("bad_signature", None);
        }
        rejections.record("bad_request", None);
        let summary = rejections.summary();
        let recent = summary["recent"].as_array().expect("a list");
        assert_eq!(recent.len(), RECENT_REJECTIONS);
        assert_eq!(recent[0]["reason"], "bad_request");
        let expected = json!({"bad_request": 1, "bad_signature": RECENT_REJECTIONS + 50});
        assert_eq!(summary["counts"], expected);
    }
}

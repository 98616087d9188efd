//! The projector of callfold: folds the event log into per-call state, ordered by payload time
//! rather than arrival, and answers queries about it.
//!
//! Owns the topic precedence graph ([`precedence`]), the fold itself ([`fold`]), the loop that
//! keeps projections up to date with the log and listens for appends ([`worker`]), the queries
//! over calls ([`query`]) and the typed views they answer ([`view`]), and the feed of
//! projection changes that live streams follow ([`stream`]). It knows no HTTP:
//! `callfold-service` serves these. It only reads the log; it never writes to it.

pub mod fold;
pub mod precedence;
pub mod query;
pub mod stream;
pub mod view;
pub mod worker;

pub use fold::{
    CALL_TOPICS, CallDocument, CallStatus, EffectiveKey, EventData, FoldEvent, fold, fold_events,
    mark_late,
};
pub use precedence::{DEFAULT_PRECEDENCE, Precedence, PrecedenceCycle};
pub use query::{CallFilter, Calls, ListParams, QueryError, parse_time};
pub use stream::{LiveChange, LiveChanges};
pub use view::{
    CallMeta, CallView, EventsHistory, HistoryEvent, LogCounts, ProjectorCounts, StatsView,
    UnlinkedEvent,
};
pub use worker::{Projector, Rebuild, Rebuilt};

//! The projector of callfold: folds the event log into per-call state, ordered by payload time
//! rather than arrival, and answers queries about it.
//!
//! Owns the topic precedence graph ([`precedence`]), the fold itself ([`fold`]), the loop that
//! keeps projections up to date with the log ([`worker`]), the queries over calls ([`query`])
//! and the typed views they answer ([`view`]), the live streams of projection changes
//! ([`stream`]), their HTTP API ([`http`]) and the operators' status page ([`status`]). It
//! only reads the log; it never writes to it.

pub mod fold;
pub mod http;
pub mod precedence;
pub mod query;
pub mod status;
pub mod stream;
pub mod view;
pub mod worker;

pub use fold::{
    CALL_TOPICS, CallDocument, CallStatus, EffectiveKey, FoldEvent, fold, fold_events, mark_late,
};
pub use http::{API_TOKEN_ENV, ApiToken, router, with_token};
pub use precedence::{DEFAULT_PRECEDENCE, Precedence, PrecedenceCycle};
pub use query::{CallFilter, Calls, ListParams, QueryError, parse_time};
pub use stream::LiveChanges;
pub use view::{
    CallMeta, CallView, EventsHistory, HistoryEvent, LogCounts, ProjectorCounts, StatsView,
    UnlinkedEvent,
};
pub use worker::Projector;

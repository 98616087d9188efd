//! The projector of callfold: folds the event log into per-call state, ordered by payload time
//! rather than arrival, and answers queries about it.
//!
//! Owns the topic precedence graph ([`precedence`]), the fold itself ([`fold`]), the loop that
//! keeps projections up to date with the log and listens for appends ([`worker`]), the queries
//! over calls ([`query`]) and the feed of projection changes that live streams follow
//! ([`stream`]). It knows no HTTP: `callfold-service` serves these. It only reads the log; it
//! never writes to it.

pub mod fold;
pub mod precedence;
pub mod query;
pub mod stream;
pub mod worker;

pub use fold::{
    CALL_TOPICS, CallDocument, CallStatus, EffectiveKey, FoldEvent, fold, fold_events, mark_late,
};
pub use precedence::{Precedence, PrecedenceCycle};
pub use query::{Calls, ListFilter, QueryError, UnlinkedPage};
pub use stream::{LiveChange, LiveChanges};
pub use worker::Projector;

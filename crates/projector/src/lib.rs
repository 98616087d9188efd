//! The projector of callfold: folds the event log into per-call state, ordered by payload time
//! rather than arrival.
//!
//! Owns the topic precedence graph ([`precedence`]) and the fold itself ([`fold`]). It only
//! reads the log; it never writes to it.

pub mod fold;
pub mod precedence;

pub use fold::{CallDocument, CallStatus, EffectiveKey, FoldEvent, fold};
pub use precedence::{Precedence, PrecedenceCycle};

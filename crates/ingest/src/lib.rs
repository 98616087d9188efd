//! The receiver of callfold: turns a signed delivery from Allo into a durable, deduplicated
//! record of the event log, and says what to answer.
//!
//! Owns signature verification ([`signature`]), secrets ([`secret`]), envelope reading and the
//! linking rules ([`envelope`]), the group commit ([`commit`]) and the decision for one
//! delivery ([`receiver`]); and, for operators, the kept records and their re-drive
//! ([`quarantine`]) and the requests refused before authentication ([`rejections`], warned of
//! in the log by [`refusal_warnings`]). It knows no HTTP server: `callfold-service` reads
//! requests and serves these as routes. It never folds state: it only appends to the log
//! through `callfold-store`.

pub mod commit;
pub mod envelope;
pub mod quarantine;
pub mod receiver;
pub mod refusal_warnings;
pub mod rejections;
pub mod secret;
pub mod signature;

pub use commit::{AppendError, CommitHealth, CommitQueue, WAITING_GAUGE};
pub use envelope::{ALLO_TOPICS, LinkingRules};
pub use quarantine::{KeptRecordDetail, Quarantine, QuarantineError, QuarantinedRecord};
pub use receiver::{DELIVERY_OUTCOMES, Receipt, Receiver, Rejection, WEBHOOK_PATH};
pub use rejections::RecentRejections;
pub use secret::{InvalidSecret, SECRETS_ENV, Secret, WebhookSecrets};
pub use signature::{HeaderError, SignedHeaders, Verifier, VerifyError, sign};

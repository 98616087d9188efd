//! The receiver of callfold: turns a signed HTTP delivery from Allo into a durable, deduplicated
//! record of the event log, then answers.
//!
//! Owns signature verification ([`signature`]), secrets ([`secret`]), envelope reading and the
//! linking rules ([`envelope`]), the group commit ([`commit`]), the endpoint ([`http`]) and the hardened socket every
//! callfold listener serves on ([`listener`]: TLS, connection and header limits); and, for
//! operators, the kept records and their re-drive ([`quarantine`]), the requests refused
//! before authentication ([`rejections`]) and the private routes over both ([`admin`]). It
//! never folds state: it only appends to the log through `callfold-store`.

pub mod admin;
pub mod commit;
mod connections;
pub mod envelope;
pub mod http;
pub mod listener;
pub mod quarantine;
pub mod rejections;
pub mod secret;
pub mod signature;

pub use admin::{quarantine_router, rejections_router};
pub use commit::{AppendError, CommitHealth, CommitQueue};
pub use envelope::LinkingRules;
pub use http::{BodyLimits, DELIVERY_OUTCOMES, IngestState, WEBHOOK_PATH, router};
pub use listener::{ConnectionLimits, PeerAddr, TlsCertificate, TlsError, TlsFiles, serve};
pub use quarantine::{Quarantine, QuarantineError};
pub use rejections::RecentRejections;
pub use secret::{InvalidSecret, SECRETS_ENV, Secret, WebhookSecrets};
pub use signature::{HeaderError, SignedHeaders, Verifier, VerifyError, sign};

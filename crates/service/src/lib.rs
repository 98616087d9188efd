//! The callfold service: [`App`], which assembles the receiver, the projector and the routes for a
//! [`Roles`] choice from [`Settings`] and a store, and serves them on listeners it is given; and
//! the HTTP layer, the one place that knows HTTP.
//!
//! Modules: the hardened [`listener`] (TLS, connection limits, shutdown) and its connection
//! registry, authentication of private routes ([`auth`]), route assembly ([`routes`]) and the JSON
//! answer of every error ([`json_errors`]), the webhook endpoint ([`webhook`]), the `/v1` query API
//! ([`query_api`]) and its live streams ([`stream`]), the share of the process's time reads may
//! take ([`read_budget`]), the operators' `/v1` routes ([`operator_api`]), the status page
//! ([`status`]), the operational endpoints ([`ops`]) and the catalog of every metric they export
//! ([`metrics_catalog`]), the secure-default check of where private routes are served
//! ([`exposure`]) and the configuration's fingerprint ([`configuration`]). The domain crates
//! (`callfold-ingest`, `callfold-projector`, `callfold-store`) expose functions and types only.

pub mod app;
pub mod auth;
pub mod configuration;
mod connections;
pub mod exposure;
pub mod json_errors;
pub mod listener;
pub mod metrics_catalog;
pub mod operator_api;
pub mod ops;
pub mod query_api;
pub mod read_budget;
pub mod routes;
pub mod settings;
pub mod status;
pub mod stream;
pub mod webhook;

pub use app::{App, Listeners, Roles};
pub use auth::{API_TOKEN_ENV, ApiToken};
pub use listener::{ConnectionLimits, PeerAddr, TlsCertificate, TlsError, TlsFiles};
pub use settings::{ProjectorSettings, ReceiverSettings, Settings};

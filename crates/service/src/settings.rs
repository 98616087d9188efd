//! What an [`crate::App`] runs with, and the one source of every default: the command line's
//! defaults are read from [`Settings::default`], and tests build apps from it.

use std::time::Duration;

use callfold_ingest::{LinkingRules, WebhookSecrets};
use callfold_projector::Precedence;

use crate::auth::ApiToken;
use crate::listener::{ConnectionLimits, TlsFiles};

/// Everything an app is configured with. `Debug` shows no secret.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The limits of every connection of every listener, and the shutdown timeout.
    pub connections: ConnectionLimits,
    /// The certificate files of the public listener, when it serves HTTPS.
    pub tls: Option<TlsFiles>,
    /// The bearer token every private route requires, when one is set.
    pub api_token: Option<ApiToken>,
    /// Serve private routes without a token beyond loopback or a private address.
    pub allow_public_api: bool,
    /// The signing secrets deliveries are verified with; required by the receiver.
    pub webhook_secrets: Option<WebhookSecrets>,
    /// Longest wait for the database to commit an append, and for `/readyz`'s check.
    pub commit_timeout: Duration,
    /// The receiver's options.
    pub receiver: ReceiverSettings,
    /// The projector's options.
    pub projector: ProjectorSettings,
    /// Where each topic keeps its call id.
    pub linking_rules: LinkingRules,
    /// The topic precedence graph ordering events of equal payload time.
    pub precedence: Precedence,
}

/// The receiver's options (see `callfold ingest --help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiverSettings {
    /// Largest accepted distance, in seconds, between webhook-timestamp and this clock.
    pub tolerance_secs: u64,
    /// Largest accepted body, in bytes (inclusive).
    pub max_body: usize,
    /// Longest time for a delivery's body to arrive once its headers have.
    pub body_read_timeout: Duration,
    /// Deliveries that may wait for the next commit.
    pub commit_queue: usize,
    /// Most deliveries committed in one transaction.
    pub commit_batch: usize,
}

/// The projector's options (see `callfold projector --help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProjectorSettings {
    /// Most calls a worker claims and folds in one transaction.
    pub batch: i64,
    /// How long a worker's claim on calls lasts.
    pub claim_lease: Duration,
    /// Least time between the starts of two batches of a worker that has caught up.
    pub fold_interval: Duration,
    /// How often the projector polls the fold queue when no append wakes it.
    pub poll_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            connections: ConnectionLimits {
                max_connections: 1024,
                max_header_bytes: 16_384,
                first_byte_timeout: Duration::from_secs(3),
                header_read_timeout: Duration::from_secs(10),
                // Longer than the 60 s idle timeout common in load balancers and proxies, which
                // must close their kept-alive connections to a backend before it does.
                keep_alive_timeout: Duration::from_secs(75),
                shutdown_timeout: Duration::from_secs(20),
            },
            tls: None,
            api_token: None,
            allow_public_api: false,
            webhook_secrets: None,
            commit_timeout: Duration::from_secs(5),
            receiver: ReceiverSettings {
                tolerance_secs: 300,
                max_body: 1_048_576,
                body_read_timeout: Duration::from_secs(10),
                commit_queue: 128,
                commit_batch: 256,
            },
            projector: ProjectorSettings {
                batch: 256,
                claim_lease: Duration::from_secs(5),
                fold_interval: Duration::from_millis(5),
                poll_interval: Duration::from_millis(500),
            },
            linking_rules: LinkingRules::default(),
            precedence: Precedence::default(),
        }
    }
}

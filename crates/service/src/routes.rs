//! Route assembly: the one place that decides which route is public and which is private, and where
//! the bearer token is applied. The public router holds the webhook endpoint alone (everything it
//! accepts is signed); the private router holds the operational endpoints (`/healthz`, `/readyz`,
//! `/metrics`, open as before so that probes need no token), `/`, which redirects to the status
//! page, and, behind the token when one is set, all of `/v1` and all of `/status`, which also wait
//! for their share of the process's time (`read_budget`). The status page is told which of the
//! private routes its role serves, so that it links to those alone. Each listener's router answers
//! every error as JSON ([`crate::json_errors`]).

use std::sync::Arc;

use axum::response::Redirect;
use axum::routing::get;
use axum::{Router, middleware};
use callfold_ingest::{Quarantine, Receiver};
use callfold_projector::{Calls, LiveChanges};
use callfold_store::Store;

use crate::auth::{ApiToken, with_token};
use crate::metrics_catalog::MetricsExporter;
use crate::ops::{self, Readiness};
use crate::read_budget::with_read_budget;
use crate::status::{self, ServedLinks};
use crate::webhook::BodyLimits;
use crate::{json_errors, operator_api, query_api};

/// What the routes of one app serve; a part is absent when the app's roles do not run it.
pub struct RouteParts {
    /// The receiver and its body limits, when the app receives deliveries.
    pub receiver: Option<(Receiver, BodyLimits)>,
    /// The query API's calls and live streams, when the app runs a projector.
    pub queries: Option<(Calls, LiveChanges)>,
    /// The kept records, which every app can inspect and re-drive.
    pub quarantine: Quarantine,
    /// The store and the calls the status page reads.
    pub status_page: (Store, Calls),
    /// What `/readyz` checks.
    pub readiness: Readiness,
    /// The metrics `/metrics` renders.
    pub metrics: MetricsExporter,
    /// The token of every private route but the operational ones, when one is set.
    pub api_token: Option<ApiToken>,
}

/// An app's routes, by who may reach them.
pub struct Routes {
    /// The webhook endpoint, when the app receives deliveries.
    pub public: Router,
    /// Everything else.
    pub private: Router,
}

/// Builds the public and the private router of `parts`.
pub fn assemble(parts: RouteParts) -> Routes {
    let served = ServedLinks {
        rejections: parts.receiver.is_some(),
        query_api: parts.queries.is_some(),
    };
    let mut public = Router::new();
    let mut guarded = operator_api::quarantine_router(parts.quarantine);
    if let Some((receiver, body_limits)) = parts.receiver {
        guarded = guarded.merge(operator_api::rejections_router(receiver.rejections()));
        public = public.merge(crate::webhook::router(receiver, body_limits));
    }
    if let Some((calls, live)) = parts.queries {
        guarded = guarded.merge(query_api::router(calls, live));
    }
    let (store, calls) = parts.status_page;
    guarded = guarded.merge(status::router(store, calls, served));
    // The token is checked before a read takes its turn, so that requests without it never
    // queue.
    let reads = with_read_budget(guarded, Arc::default());
    let private = ops::router(parts.readiness, parts.metrics)
        .route("/", get(|| async { Redirect::to(status::OVERVIEW) }))
        .merge(with_token(reads, parts.api_token));
    Routes { public, private }
}

impl Routes {
    /// The router of each listener: with an admin listener, the public one gets the public
    /// routes and the admin one the private routes; else the one listener gets both. Either
    /// answers every error as JSON.
    pub fn by_listener(self, admin_listener: bool) -> (Router, Option<Router>) {
        let Routes { public, private } = self;
        let json_errors = || middleware::from_fn(json_errors::as_json);
        if admin_listener {
            (
                public.layer(json_errors()),
                Some(private.layer(json_errors())),
            )
        } else {
            (public.merge(private).layer(json_errors()), None)
        }
    }
}

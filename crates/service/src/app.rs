//! The service as a value: [`App::build`] assembles the receiver, the projector and the
//! routes for the [`Roles`] asked for, and [`App::serve`] serves them on [`Listeners`] already
//! bound until a shutdown future resolves, then stops in a fixed order (see [`App::serve`]).
//! The executable and the tests build the same app.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use callfold_ingest::{CommitQueue, Quarantine, Receiver, Verifier};
use callfold_projector::{Calls, LiveChanges, Projector};
use callfold_store::{ConfigFingerprint, Store};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::configuration::{REBUILD_ADVICE, fingerprint, other_configuration};
use crate::listener::{self, ConnectionLimits, TlsCertificate};
use crate::metrics_catalog::MetricsExporter;
use crate::ops::{self, Readiness};
use crate::routes::{self, RouteParts, Routes};
use crate::settings::Settings;
use crate::webhook::BodyLimits;

/// Which parts of callfold an app runs. Every app serves the quarantine, the status page and
/// the operational endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Roles {
    /// The receiver, the projector and the query API (`callfold serve`).
    All,
    /// The receiver alone (`callfold ingest`).
    Ingest,
    /// The projector and the query API (`callfold projector`).
    Projector,
}

impl Roles {
    fn receives(self) -> bool {
        matches!(self, Roles::All | Roles::Ingest)
    }

    fn projects(self) -> bool {
        matches!(self, Roles::All | Roles::Projector)
    }
}

/// The sockets an app serves on: every route on `public`, or, with `admin`, the webhook
/// endpoint on `public` and the rest on `admin`.
#[derive(Debug)]
pub struct Listeners {
    /// The listener that may face the internet (HTTPS when the settings give TLS files).
    pub public: TcpListener,
    /// The private listener, when there is one.
    pub admin: Option<TcpListener>,
}

/// The addresses [`Listeners`] are bound to, as the address file records them.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct BoundAddresses {
    /// The public listener's address.
    pub listen: SocketAddr,
    /// The admin listener's address, when there is one.
    pub admin_listen: Option<SocketAddr>,
    /// Whether the public listener serves HTTPS.
    pub https: bool,
}

impl Listeners {
    /// Binds `listen` and, when given, `admin_listen`, once the secure-default check passes
    /// for where an app with `settings` would serve its private routes.
    pub async fn bind(
        listen: SocketAddr,
        admin_listen: Option<SocketAddr>,
        settings: &Settings,
    ) -> anyhow::Result<Self> {
        crate::exposure::check(listen, admin_listen, settings)?;
        let admin = match admin_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Self {
            public: bind(listen).await?,
            admin,
        })
    }

    /// Where the listeners are bound, and whether the public one serves HTTPS.
    pub fn addresses(&self, https: bool) -> std::io::Result<BoundAddresses> {
        let admin_listen = self
            .admin
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        Ok(BoundAddresses {
            listen: self.public.local_addr()?,
            admin_listen,
            https,
        })
    }

    /// Writes [`Listeners::addresses`] as JSON to `path`, whole or not at all (a reader never
    /// sees half a file).
    pub fn write_address_file(&self, path: &Path, https: bool) -> anyhow::Result<()> {
        let json = serde_json::to_vec(&self.addresses(https)?)?;
        let partial = path.with_extension("partial");
        std::fs::write(&partial, json)
            .and_then(|()| std::fs::rename(&partial, path))
            .with_context(|| format!("cannot write the address file {}", path.display()))
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// An assembled service, ready to serve.
pub struct App {
    store: Store,
    limits: ConnectionLimits,
    tls: Option<Arc<TlsCertificate>>,
    routes: Routes,
    committer: Option<JoinHandle<()>>,
    projector: Option<(Projector, Settings)>,
    appended: Arc<Notify>,
    stop: watch::Sender<bool>,
}

impl App {
    /// Assembles the parts `roles` asks for over `store`, configured by `settings`: starts the
    /// committer (when receiving), prepares the projector, and builds the routes. Warns when
    /// the store's projections were folded with another configuration.
    pub async fn build(roles: Roles, settings: Settings, store: Store) -> anyhow::Result<Self> {
        let tls = settings.tls.clone().map(TlsCertificate::load).transpose();
        let tls = tls.context("cannot set up HTTPS")?.map(Arc::new);
        let configuration = fingerprint(&settings.linking_rules, &settings.precedence);
        warn_of_other_configuration(&store, &configuration).await;
        let appended = Arc::new(Notify::new());
        let (stop, stopping) = watch::channel(false);
        let (receiver, committer) = if roles.receives() {
            let (receiver, committer) = start_receiver(&settings, &store, &appended)?;
            (Some(receiver), Some(committer))
        } else {
            (None, None)
        };
        let projector = roles.projects().then(|| {
            let projector = Projector::new(
                store.clone(),
                settings.precedence.clone(),
                settings.projector.batch,
                settings.projector.claim_lease,
            );
            projector.recording(configuration.clone())
        });
        let queries = projector.as_ref().map(|projector| {
            let poll = settings.projector.poll_interval;
            let live = LiveChanges::new(store.clone(), projector.projected(), poll);
            (calls(&store, &settings), live.ending_on(stopping))
        });
        let readiness = Readiness {
            store: store.clone(),
            deadline: settings.commit_timeout,
            commits: receiver.as_ref().map(|(_, queue)| queue.health()),
            configuration,
        };
        let quarantine = Quarantine::new(
            store.clone(),
            settings.linking_rules.clone(),
            settings.commit_timeout,
        );
        let routes = routes::assemble(RouteParts {
            receiver: receiver.map(|(receiver, _)| (receiver, body_limits(&settings))),
            queries,
            quarantine,
            status_page: (store.clone(), calls(&store, &settings)),
            readiness,
            metrics: MetricsExporter::install(roles)?,
            api_token: settings.api_token.clone(),
        });
        Ok(Self {
            store,
            limits: settings.connections,
            tls,
            routes,
            committer,
            projector: projector.map(|projector| (projector, settings)),
            appended,
            stop,
        })
    }

    /// The public listener's certificate, when it serves HTTPS: reloading it
    /// ([`TlsCertificate::reload`]) swaps it for new handshakes.
    pub fn tls_certificate(&self) -> Option<Arc<TlsCertificate>> {
        self.tls.clone()
    }

    /// Serves on `listeners` until `shutdown` resolves, then stops in this order: the
    /// listeners stop accepting and close their idle connections, and live streams end their
    /// bodies; requests in flight finish, for at most the shutdown timeout, after which the
    /// connections still open are closed (those requests were not answered, so they are sent
    /// again); then the committer commits every append it accepted; then the projector
    /// finishes the batches it has in flight and the pools close, for at most another shutdown
    /// timeout (a read on a silent database never ends).
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            store,
            limits,
            tls,
            routes,
            committer,
            projector,
            appended,
            stop,
        } = self;
        let stopped = stop.subscribe();
        let stopped = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }
        };
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let (stats_store, stop_publishing) = (store.clone(), stopped());
        tokio::spawn(async move {
            tokio::select! {
                () = ops::publish_store_stats(stats_store) => {}
                () = stop_publishing => {}
            }
        });
        let projector = projector.map(|(projector, settings)| {
            start_projector(projector, &settings, appended, stopped.clone())
        });
        let (public, private) = routes.by_listener(listeners.admin.is_some());
        let mut admin_task = None;
        if let (Some(admin), Some(private)) = (listeners.admin, private) {
            tracing::info!(addr = %admin.local_addr()?, "admin listener (query API, metrics, health)");
            let serving = listener::serve(admin, private, limits, None, stopped());
            admin_task = Some(tokio::spawn(serving));
        }
        tracing::info!(
            addr = %listeners.public.local_addr()?,
            https = tls.is_some(),
            backend = store.backend_name(),
            "listening"
        );
        listener::serve(listeners.public, public, limits, tls, stopped()).await;
        if let Some(admin) = admin_task {
            admin.await.context("the admin listener failed")?;
        }
        finish(store, committer, projector, limits.shutdown_timeout).await
    }
}

/// The projector's task and the one that wakes it on appends in other processes, both ending
/// on `stopped`.
fn start_projector<F>(
    projector: Projector,
    settings: &Settings,
    appended: Arc<Notify>,
    stopped: impl Fn() -> F,
) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let poll = settings.projector.poll_interval;
    let fold_interval = settings.projector.fold_interval;
    let (listening, woken, stop_listening) = (projector.clone(), appended.clone(), stopped());
    tokio::spawn(async move {
        tokio::select! {
            () = listening.listen_for_appends(&woken, poll) => {}
            () = stop_listening => {}
        }
    });
    let stop_folding = stopped();
    tokio::spawn(async move {
        projector
            .run(appended, poll, fold_interval, stop_folding)
            .await
    })
}

/// The end of a shutdown, once the listeners have stopped: the router, and with it every queue
/// handle, is gone, so the committer drains and stops (each of its commits has a deadline).
/// A read on a database that stopped answering without closing (the projector's read of a
/// call's events, a stream's poll cut mid-query) has no deadline of its own: the projector's
/// batch and the closing of the pools get `timeout`, then are abandoned.
async fn finish(
    store: Store,
    committer: Option<JoinHandle<()>>,
    projector: Option<JoinHandle<()>>,
    timeout: Duration,
) -> anyhow::Result<()> {
    if let Some(committer) = committer {
        committer.await.context("the committer failed")?;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let timeout_ms = timeout.as_millis();
    if let Some(projector) = projector {
        match tokio::time::timeout_at(deadline, projector).await {
            Ok(finished) => finished.context("the projector failed")?,
            Err(_) => tracing::warn!(
                timeout_ms,
                "the projector's batch did not finish within the shutdown timeout; abandoned, \
                 its claims expire with their lease"
            ),
        }
    }
    if tokio::time::timeout_at(deadline, store.close())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_ms,
            "database connections still busy at the shutdown timeout; abandoned, not closed cleanly"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

fn calls(store: &Store, settings: &Settings) -> Calls {
    Calls::new(store.clone(), settings.precedence.clone())
}

fn body_limits(settings: &Settings) -> BodyLimits {
    BodyLimits {
        max_bytes: settings.receiver.max_body,
        read_timeout: settings.receiver.body_read_timeout,
    }
}

/// The receiver of `settings` over `store`, with its commit queue, and the committer's task,
/// which notifies `appended` after each commit that wrote something.
fn start_receiver(
    settings: &Settings,
    store: &Store,
    appended: &Arc<Notify>,
) -> anyhow::Result<((Receiver, CommitQueue), JoinHandle<()>)> {
    let secrets = settings
        .webhook_secrets
        .clone()
        .context("the receiver needs the webhook signing secrets")?;
    let (queue, committer) = CommitQueue::start(
        store.clone(),
        settings.receiver.commit_queue,
        settings.receiver.commit_batch,
        settings.commit_timeout,
        Arc::clone(appended),
    );
    let receiver = Receiver::new(
        Verifier::new(secrets, settings.receiver.tolerance_secs),
        settings.linking_rules.clone(),
        queue.clone(),
    );
    Ok(((receiver, queue), committer))
}

async fn warn_of_other_configuration(store: &Store, configuration: &ConfigFingerprint) {
    match other_configuration(store, configuration).await {
        Ok(None) => {}
        Ok(Some(other)) => tracing::warn!(
            this_process = %configuration,
            projections_also_folded_with = %other,
            advice = REBUILD_ADVICE,
            "projections were folded with another configuration"
        ),
        Err(error) => tracing::warn!(%error, "cannot compare the configuration with the store's"),
    }
}

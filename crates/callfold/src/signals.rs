//! The signals a serving process answers: SIGHUP reloads the TLS certificate, SIGINT and
//! SIGTERM shut it down.

use std::sync::Arc;

use anyhow::Context;

use callfold_service::TlsCertificate;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Reads the certificate files again on each SIGHUP; a failed reload keeps the one in use.
/// Without HTTPS there is nothing to reload, and a SIGHUP only says so.
pub async fn reload_on_hangup(mut hangups: Signal, tls: Option<Arc<TlsCertificate>>) {
    while hangups.recv().await.is_some() {
        let Some(certificate) = &tls else {
            tracing::info!("SIGHUP: no TLS certificate to reload");
            continue;
        };
        match certificate.reload() {
            Ok(()) => tracing::info!("TLS certificate reloaded"),
            Err(error) => {
                tracing::error!(%error, "TLS certificate not reloaded; keeping the one in use")
            }
        }
    }
}

/// A future that resolves on SIGINT or SIGTERM. Both are handled from this call on, so that
/// neither meets the default action once a caller was told the service listens.
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down: no new connections, finishing appends in flight");
    })
}

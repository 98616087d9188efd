//! Serving a router on a socket that may face the internet: the accept loop, the cap on
//! concurrent connections, the limits on request headers (size, and time to arrive), optional
//! TLS with a certificate that can be swapped while connections stay open, the peer's address
//! on every request ([`PeerAddr`]), and a graceful shutdown that lets requests in flight
//! finish.
//!
//! A connection past the cap is closed at once, before a byte of it is read, so a flood of
//! connections costs a file descriptor for an instant, never memory. Headers that take longer
//! than the read timeout (a slowloris sender, or an idle keep-alive connection) close the
//! connection; headers larger than the limit get 431.
//!
//! On shutdown a listener stops accepting, closes its idle connections at once, and lets each
//! request in flight finish; whatever is still open after the shutdown timeout is closed. A
//! request cut that way was never answered, so its sender retries it.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

/// The address a request's connection came from, in every request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// How long to back off when accepting fails (for instance out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The limits every connection of a listener is held to.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Most connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// Largest request line plus headers, in bytes; more is answered 431.
    pub max_header_bytes: usize,
    /// Longest wait for a request's complete headers (and for a TLS handshake); past it the
    /// connection is closed.
    pub header_read_timeout: Duration,
    /// Longest wait, once shutting down, for the requests in flight; then the connections
    /// still open are closed.
    pub shutdown_timeout: Duration,
}

/// Where the certificate chain and private key (PEM) of the TLS listener are read from.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the certificate files could not be used. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read, or holds no PEM item of the kind expected.
    #[error("cannot read the TLS {what} from {path}: {problem}")]
    Unreadable {
        /// `certificate chain` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// The key does not suit the certificate, or is of an unsupported kind.
    #[error("the TLS private key cannot be used with the certificate: {0}")]
    Unusable(#[from] rustls::Error),
}

/// The TLS side of a listener: the current certificate, which [`TlsCertificate::reload`]
/// replaces for new handshakes while open connections keep theirs.
pub struct TlsCertificate {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCertificate")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsCertificate {
    /// Loads the certificate and key from `files`.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let current = RwLock::new(Arc::new(read_certified_key(&files)?));
        Ok(Self { files, current })
    }

    /// Reads the files again and uses them for every later handshake. On an error the
    /// certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(read_certified_key(&self.files)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_no_client_auth()
                .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

impl ResolvesServerCert for TlsCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

fn read_certified_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let unreadable = |what, path: &PathBuf, problem: String| TlsError::Unreadable {
        what,
        path: path.clone(),
        problem,
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|items| items.collect::<Result<Vec<_>, _>>())
        .map_err(|e| unreadable("certificate chain", &files.cert, e.to_string()))?;
    if chain.is_empty() {
        let problem = "no CERTIFICATE item".to_owned();
        return Err(unreadable("certificate chain", &files.cert, problem));
    }
    // The error of a key file names the file and the PEM problem, never the key's bytes.
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| unreadable("private key", &files.key, e.to_string()))?;
    let provider = rustls::crypto::ring::default_provider();
    Ok(CertifiedKey::from_der(chain, key, &provider)?)
}

/// Serves `app` on `listener` under `limits`, over TLS when `tls` is given, until `shutdown`
/// resolves. Then it stops accepting, closes idle connections, lets requests in flight finish
/// (a request must not hold a response open forever: streams end on the same shutdown), and
/// after `limits.shutdown_timeout` closes whatever is still open.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<Arc<TlsCertificate>>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tls.as_ref().map(TlsCertificate::acceptor);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes);
    let http = Arc::new(http);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed; backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            Some(_) = connections.join_next() => continue,
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!("callfold_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        let (app, http, acceptor) = (app.clone(), Arc::clone(&http), acceptor.clone());
        let stopping = stopping.clone();
        connections.spawn(async move {
            metrics::gauge!("callfold_connections_open").increment(1.0);
            let served = match acceptor {
                None => serve_connection(&http, stream, peer, app, stopping).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            serve_connection(&http, stream, peer, app, stopping).await
                        }
                        Ok(Err(error)) => Err(error),
                        Err(_) => Err(io::ErrorKind::TimedOut.into()),
                    }
                }
            };
            if let Err(error) = served {
                tracing::debug!(%error, "connection ended with an error");
            }
            metrics::gauge!("callfold_connections_open").decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "shutdown timeout passed; closing the connections still open"
        );
        connections.shutdown().await;
    }
}

async fn serve_connection<S>(
    http: &http1::Builder,
    stream: S,
    peer: SocketAddr,
    app: Router,
    mut stopping: watch::Receiver<bool>,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = app.layer(axum::Extension(PeerAddr(peer)));
    let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => return served.map_err(io::Error::other),
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    // Closes an idle connection at once, and this one after the response in flight.
    connection.as_mut().graceful_shutdown();
    connection.await.map_err(io::Error::other)
}

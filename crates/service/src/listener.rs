//! Serving a router on a socket that may face the internet: the accept loop, the cap on
//! concurrent connections and who gives way at it (see `connections`), the deadlines for a
//! connection's first byte, for its request headers and for its idle time between requests,
//! the limit on the headers' size, optional TLS with a certificate that can be swapped while
//! connections stay open, the peer's address on every request ([`PeerAddr`]), and the shutdown
//! of a listener's connections.
//!
//! A connection that sends nothing costs a socket and a small task, no buffer: it must send
//! its first byte within the first-byte timeout, and at the cap the longest-idle connection
//! (never one with a request in flight) is closed to make room for a newcomer. Each request's
//! headers must arrive within the header-read timeout, counted from their first byte read
//! while no request is answered (for a connection's first request, from its first byte, or
//! from the end of its TLS handshake); a slowloris sender is closed, and headers larger than
//! the limit get 431. Between a response and the next request's first byte a kept-alive
//! connection may stay idle for the keep-alive timeout, longer by default: a sender that reuses
//! its connections closes them before the server does, instead of sending a request into a
//! connection the server is closing. Either deadline closes the connection, also while
//! shutting down.
//!
//! On shutdown a listener stops accepting, closes its idle connections at once, and lets each
//! request in flight finish; whatever is still open after the shutdown timeout is closed. A
//! request cut that way was never answered, so its sender retries it.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::{Service as _, service_fn};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

use crate::connections::{Admission, ConnectionSlot, OpenConnections, RequestInFlight};

/// The address a request's connection came from, in every request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// How long to back off when accepting fails (for instance out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The limits every connection of a listener is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once. At the cap a newcomer takes the place of the
    /// longest-idle connection; it is closed on accept only when every open connection has a
    /// request in flight.
    pub max_connections: usize,
    /// Largest request line plus headers, in bytes; more is answered 431.
    pub max_header_bytes: usize,
    /// Longest wait for a new connection's first byte; past it the connection is closed.
    pub first_byte_timeout: Duration,
    /// Longest wait for a request's complete headers, from their first byte (and for a TLS
    /// handshake); past it the connection is closed.
    pub header_read_timeout: Duration,
    /// Longest a kept-alive connection may stay idle, from a response's end to the next
    /// request's first byte; past it the connection is closed.
    pub keep_alive_timeout: Duration,
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
    /// The key does not suit the certificate, or is of an unsupported kind. The message quotes
    /// rustls's, which is therefore not also the source: a chain of causes (`{:#}`) says it
    /// once.
    #[error("the TLS private key cannot be used with the certificate: {0}")]
    Unusable(rustls::Error),
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
    CertifiedKey::from_der(chain, key, &provider).map_err(TlsError::Unusable)
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
    let open = OpenConnections::new(limits.max_connections);
    let (stop, stopping) = watch::channel(false);
    let mut http = http1::Builder::new();
    // No header-read timeout of hyper's: it would also start when a connection falls idle,
    // and so close kept-alive connections at the header deadline. `Pace` keeps both limits.
    http.header_read_timeout(None)
        .max_header_size(limits.max_header_bytes);
    let listening = Arc::new(Listening {
        http,
        app: TowerToHyperService::new(app),
        acceptor,
        limits,
    });
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
        let slot = match open.admit() {
            Admission::Admitted(slot) => slot,
            Admission::AdmittedByEviction(slot) => {
                metrics::counter!("callfold_connections_evicted_total").increment(1);
                slot
            }
            Admission::Refused => {
                metrics::counter!("callfold_connections_refused_total").increment(1);
                drop(stream);
                continue;
            }
        };
        let connection = Connection {
            slot,
            stopping: stopping.clone(),
            listening: Arc::clone(&listening),
            peer,
        };
        connections.spawn(async move {
            metrics::gauge!("callfold_connections_open").increment(1.0);
            if let Err(error) = connection.serve(stream).await {
                tracing::debug!(%error, "connection ended with an error");
            }
            metrics::gauge!("callfold_connections_open").decrement(1.0);
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

/// What every connection of one listener shares.
struct Listening {
    http: http1::Builder,
    app: TowerToHyperService<Router>,
    acceptor: Option<TlsAcceptor>,
    limits: ConnectionLimits,
}

/// One accepted connection, from its first byte to its close.
struct Connection {
    slot: ConnectionSlot,
    stopping: watch::Receiver<bool>,
    listening: Arc<Listening>,
    peer: SocketAddr,
}

impl Connection {
    async fn serve(mut self, stream: TcpStream) -> io::Result<()> {
        let limits = self.listening.limits;
        // No buffer is set up before the first byte, so a connection that sends nothing
        // costs only its socket and this task until the deadline or its eviction.
        let mut first = [0u8; 1];
        let first_byte = tokio::time::timeout(limits.first_byte_timeout, stream.peek(&mut first));
        match self.unless_closing(first_byte).await {
            Some(Ok(arrived)) => {
                arrived?;
            }
            Some(Err(_)) => return Err(io::ErrorKind::TimedOut.into()),
            None => return Ok(()),
        }
        // Boxed, so that a silent connection's task does not carry the room of a served one.
        let Some(acceptor) = self.listening.acceptor.clone() else {
            return Box::pin(self.serve_http(stream)).await;
        };
        let handshake = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
        let handshake = Box::pin(handshake);
        match self.unless_closing(handshake).await {
            Some(Ok(Ok(stream))) => Box::pin(self.serve_http(stream)).await,
            Some(Ok(Err(error))) => Err(error),
            Some(Err(_)) => Err(io::ErrorKind::TimedOut.into()),
            None => Ok(()),
        }
    }

    /// Runs `step`, unless the connection is evicted or the listener stops first (`None`).
    /// Only for steps before a request starts.
    async fn unless_closing<T>(&mut self, step: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            done = step => Some(done),
            () = self.slot.evicted() => None,
            _ = self.stopping.wait_for(|stop| *stop) => None,
        }
    }

    async fn serve_http<S>(mut self, stream: S) -> io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = self.listening.limits;
        // The first byte has arrived: the first request's headers are on their way.
        let pace = Arc::new(Pace::new(Phase::Headers(Instant::now())));
        let (listening, requests, peer) =
            (Arc::clone(&self.listening), self.slot.requests(), self.peer);
        let answering = Arc::clone(&pace);
        let service = service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(PeerAddr(peer));
            let answering = RequestAnswering::start(&answering);
            let in_flight = requests.start();
            let answer = in_flight.is_some().then(|| listening.app.call(request));
            async move {
                let (Some(in_flight), Some(answer)) = (in_flight, answer) else {
                    return Ok(evicted_answer(answering));
                };
                let response = answer.await?;
                Ok::<_, Infallible>(response.map(|body| ResponseBody {
                    body,
                    _in_flight: Some(in_flight),
                    _answering: answering,
                }))
            }
        });
        let stream = PacedStream {
            stream,
            pace: Arc::clone(&pace),
        };
        let connection = self
            .listening
            .http
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        // Watched to its end, shutting down or not: an idle or slow connection must not
        // outlive its deadline, nor an evicted one its slot.
        let mut shutting_down = false;
        loop {
            tokio::select! {
                served = connection.as_mut() => return served.map_err(io::Error::other),
                // Only an idle connection is evicted (see `connections`): no request is cut.
                // (A response whose last bytes the client has not read yet may be; the client
                // is not reading, and it retries what got no complete answer.)
                () = self.slot.evicted() => return Ok(()),
                overstay = pace.overstayed(&limits) => return match overstay {
                    Overstay::Headers => Err(io::ErrorKind::TimedOut.into()),
                    Overstay::Idle => Ok(()),
                },
                _ = self.stopping.wait_for(|stop| *stop), if !shutting_down => {
                    // Closes an idle connection at once, and this one after the response in
                    // flight.
                    connection.as_mut().graceful_shutdown();
                    shutting_down = true;
                }
            }
        }
    }
}

/// Where a served connection stands between its requests, for the deadline that applies.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Since when the connection has been idle: no request in flight, and no byte of the next
    /// read since (bytes read while the last one was answered may wait in hyper's buffer).
    Idle(Instant),
    /// Since when the next request's headers have been arriving (their first byte).
    Headers(Instant),
    /// This many requests are being answered (counted, so that the end of one can never
    /// mark idle a connection answering another); no deadline of the listener's applies.
    Answering(usize),
}

/// Which deadline a connection outstayed; either way it is closed.
#[derive(Debug)]
enum Overstay {
    /// The keep-alive timeout, idle.
    Idle,
    /// The header-read timeout.
    Headers,
}

/// One served connection's [`Phase`], moved on by its stream's reads ([`PacedStream`]) and its
/// requests ([`RequestAnswering`]), and watched against the limits by
/// [`Pace::overstayed`].
#[derive(Debug)]
struct Pace {
    phase: Mutex<Phase>,
    /// Wakes the watch when the phase moves to one with a new deadline.
    moved: Notify,
}

impl Pace {
    fn new(phase: Phase) -> Self {
        Self {
            phase: Mutex::new(phase),
            moved: Notify::new(),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes were read: on an idle connection they begin the next request's headers. Bytes
    /// read while a request is answered are its body, or the start of a pipelined request;
    /// the connection then falls idle at the response's end like any other, and the next
    /// bytes it reads start the header deadline.
    fn bytes_arrived(&self) {
        let mut phase = self.phase();
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Headers(Instant::now());
            self.moved.notify_one();
        }
    }

    /// Resolves once the connection has stayed in its phase longer than `limits` allow.
    async fn overstayed(&self, limits: &ConnectionLimits) -> Overstay {
        loop {
            let deadline = match *self.phase() {
                Phase::Idle(since) => Some((since + limits.keep_alive_timeout, Overstay::Idle)),
                Phase::Headers(since) => {
                    Some((since + limits.header_read_timeout, Overstay::Headers))
                }
                Phase::Answering(_) => None,
            };
            match deadline {
                Some((at, overstay)) if at <= Instant::now() => return overstay,
                Some((at, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at.into()) => {}
                        () = self.moved.notified() => {}
                    }
                }
                None => self.moved.notified().await,
            }
        }
    }
}

/// A request being answered: its connection is [`Phase::Answering`] from its headers' end
/// until this is dropped (with the response's body, once written or abandoned), and idle then.
struct RequestAnswering(Arc<Pace>);

impl RequestAnswering {
    fn start(pace: &Arc<Pace>) -> Self {
        let mut phase = pace.phase();
        *phase = match *phase {
            Phase::Answering(requests) => Phase::Answering(requests + 1),
            Phase::Idle(_) | Phase::Headers(_) => Phase::Answering(1),
        };
        Self(Arc::clone(pace))
    }
}

impl Drop for RequestAnswering {
    fn drop(&mut self) {
        let mut phase = self.0.phase();
        *phase = match *phase {
            Phase::Answering(requests) if requests > 1 => Phase::Answering(requests - 1),
            _ => Phase::Idle(Instant::now()),
        };
        self.0.moved.notify_one();
    }
}

/// A connection's stream, which tells its [`Pace`] when bytes arrive.
struct PacedStream<S> {
    stream: S,
    pace: Arc<Pace>,
}

impl<S: AsyncRead + Unpin> AsyncRead for PacedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.pace.bytes_arrived();
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PacedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The answer to a request that arrived just as its connection was evicted: it was not read,
/// so it is safe to send again.
fn evicted_answer(answering: RequestAnswering) -> Response<ResponseBody> {
    let error = r#"{"error":"the connection was closing; send the request again"}"#;
    let mut response = Response::new(ResponseBody {
        body: Body::from(error),
        _in_flight: None,
        _answering: answering,
    });
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A response's body, which keeps its request in flight (and so its connection from being
/// evicted, and from its idle deadline) until the body is written to its end or dropped.
struct ResponseBody {
    body: Body,
    _in_flight: Option<RequestInFlight>,
    _answering: RequestAnswering,
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

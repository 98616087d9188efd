//! A TCP relay between callfold and PostgreSQL that can stop copying bytes without closing the
//! sockets: a database that goes silent, as a firewall that drops packets (or a NAT, a
//! connection pooler, a load balancer that stops answering) makes it. One connection, every
//! connection that sends given bytes, or all of them can fall silent; new connections are
//! forwarded unless all are silenced.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Which relayed connections copy bytes.
#[derive(Clone, Debug, Default)]
struct Flow {
    /// No connection copies anything.
    all_silent: bool,
    /// A connection whose client sends bytes containing these falls silent, from those bytes
    /// on.
    silence_sender_of: Option<Vec<u8>>,
    /// Whether every such connection falls silent, not only the next one.
    silence_every_sender: bool,
    /// The connections fallen silent.
    silent: HashSet<usize>,
}

impl Flow {
    fn forwards(&self, connection: usize) -> bool {
        !self.all_silent && !self.silent.contains(&connection)
    }
}

/// A TCP relay on a loopback port in front of a PostgreSQL server.
pub struct Relay {
    /// Where the relay listens.
    pub addr: SocketAddr,
    flow: Arc<watch::Sender<Flow>>,
}

impl Relay {
    /// Starts a relay in front of `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let flow = Arc::new(watch::channel(Flow::default()).0);
        let relay_flow = Arc::clone(&flow);
        tokio::spawn(async move {
            for connection in 0.. {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let server = TcpStream::connect(&upstream)
                    .await
                    .expect("reach PostgreSQL");
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let flow = || Arc::clone(&relay_flow);
                tokio::spawn(pump(connection, client_read, server_write, flow(), true));
                tokio::spawn(pump(connection, server_read, client_write, flow(), false));
            }
        });
        Self { addr, flow }
    }

    /// A relay in front of the server of `database_url` (`postgres://user@host:port/db...`),
    /// and the same URL through the relay.
    pub async fn in_front_of(database_url: &str) -> (Self, String) {
        let upstream = host_and_port(database_url).to_owned();
        let relay = Self::start(upstream.clone()).await;
        let relayed_url = database_url.replacen(&upstream, &relay.addr.to_string(), 1);
        (relay, relayed_url)
    }

    /// The connection that next carries `bytes` to the server stops copying, from them on.
    pub fn silence_connection_sending(&self, bytes: impl Into<Vec<u8>>) {
        let bytes = bytes.into();
        self.flow.send_modify(|flow| {
            flow.silence_sender_of = Some(bytes);
            flow.silence_every_sender = false;
        });
    }

    /// Every connection that carries `bytes` to the server from now on stops copying, from
    /// them on; the others, and new connections, keep copying.
    pub fn silence_every_connection_sending(&self, bytes: impl Into<Vec<u8>>) {
        let bytes = bytes.into();
        self.flow.send_modify(|flow| {
            flow.silence_sender_of = Some(bytes);
            flow.silence_every_sender = true;
        });
    }

    /// How many connections have fallen silent, all silenced or not.
    pub fn silent_connections(&self) -> usize {
        self.flow.borrow().silent.len()
    }

    /// Every connection stops copying.
    pub fn silence_all(&self) {
        self.flow.send_modify(|flow| flow.all_silent = true);
    }

    /// Every connection copies again, what it held first.
    pub fn resume(&self) {
        self.flow.send_replace(Flow::default());
    }
}

/// Copies `from` to `to` while `connection` forwards; a chunk read while it is silent waits.
/// When `from_client`, a chunk holding the awaited bytes silences `connection` before it is
/// copied. A closed side is passed on once the connection forwards.
async fn pump(
    connection: usize,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    flow: Arc<watch::Sender<Flow>>,
    from_client: bool,
) {
    let mut buffer = vec![0; 64 * 1024];
    let mut forwarding = flow.subscribe();
    loop {
        let read = from.read(&mut buffer).await.unwrap_or(0);
        if from_client {
            flow.send_if_modified(|flow| match &flow.silence_sender_of {
                Some(awaited) if buffer[..read].windows(awaited.len()).any(|w| w == awaited) => {
                    if !flow.silence_every_sender {
                        flow.silence_sender_of = None;
                    }
                    flow.silent.insert(connection)
                }
                _ => false,
            });
        }
        let _ = forwarding.wait_for(|flow| flow.forwards(connection)).await;
        if read == 0 || to.write_all(&buffer[..read]).await.is_err() {
            let _ = to.shutdown().await;
            return;
        }
    }
}

/// `host:port` of a `postgres://user@host:port/db?...` URL.
fn host_and_port(url: &str) -> &str {
    let after_user = url.split_once('@').expect("user in the test URL").1;
    after_user.split(['/', '?']).next().expect("host")
}

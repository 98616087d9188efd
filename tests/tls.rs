//! HTTPS on the receiver's listener, end to end through the `callfold` executable, with
//! certificates made in the test: a delivery over TLS, a certificate reload on SIGHUP that new
//! handshakes see while an open connection keeps working, and a broken reload that keeps the
//! certificate in use.

mod support;

use std::sync::Arc;

use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use support::certificate::{Certificate, install, self_signed, serve_https};
use support::{RunningService, SECRET, TestDb, envelope, signature, unix_now};

/// A TLS client that trusts exactly `trusted`.
fn connector(trusted: &[&Certificate]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for certificate in trusted {
        roots.add(certificate.der.clone()).expect("a valid root");
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("default versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// An HTTPS connection to the service: a handle to send requests on it, and the certificate
/// the server presented.
async fn connect(
    service: &RunningService,
    connector: &TlsConnector,
) -> (SendRequest<Full<bytes::Bytes>>, CertificateDer<'static>) {
    let authority = service.base_url.strip_prefix("https://").expect("https");
    let tcp = TcpStream::connect(authority).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("a name");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let presented = tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP handshake");
    tokio::spawn(connection);
    (sender, presented)
}

/// Sends one signed delivery of a new call on `sender`; the status.
async fn deliver(sender: &mut SendRequest<Full<bytes::Bytes>>, id: &str) -> u16 {
    let body = envelope(
        "call.completed",
        "2026-02-10T09:17:42.318Z",
        serde_json::json!({"id": format!("cll_{id}")}),
    );
    let now = unix_now();
    let request = hyper::Request::post("/webhooks/allo")
        .header("host", "localhost")
        .header("webhook-id", id)
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", signature(SECRET, id, now, &body))
        .body(Full::new(bytes::Bytes::from(body)))
        .expect("a request");
    let response = sender.send_request(request).await.expect("an answer");
    response.status().as_u16()
}

fn hang_up(service: &RunningService) {
    let pid = service.child.id().expect("running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
}

#[tokio::test]
async fn https_delivery_and_a_certificate_reload_that_keeps_open_connections() {
    let db = TestDb::sqlite().await;
    let folder = tempfile::tempdir().expect("temp dir");
    let (first, second) = (self_signed(), self_signed());
    install(&first, folder.path());
    let service = serve_https(&db.url, folder.path()).await;
    assert!(
        service.base_url.starts_with("https://"),
        "{}",
        service.base_url
    );
    let client = connector(&[&first, &second]);

    let (mut open, presented) = connect(&service, &client).await;
    assert_eq!(presented, first.der);
    assert_eq!(deliver(&mut open, "msg_tls_1").await, 200);
    // A client that trusts only the second certificate is refused for now.
    let authority = service.base_url.strip_prefix("https://").expect("https");
    let tcp = TcpStream::connect(authority).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("a name");
    assert!(connector(&[&second]).connect(name, tcp).await.is_err());

    install(&second, folder.path());
    hang_up(&service);
    support::wait_until("new handshakes present the new certificate", 10, || async {
        connect(&service, &client).await.1 == second.der
    })
    .await;
    assert_eq!(
        deliver(&mut open, "msg_tls_2").await,
        200,
        "the connection opened before the reload still works"
    );
    let (mut fresh, _) = connect(&service, &connector(&[&second])).await;
    assert_eq!(deliver(&mut fresh, "msg_tls_3").await, 200);

    std::fs::write(folder.path().join("key.pem"), "not a key").expect("write");
    hang_up(&service);
    support::wait_until("the failed reload is logged", 10, || async {
        service.output().contains("TLS certificate not reloaded")
    })
    .await;
    assert_eq!(connect(&service, &client).await.1, second.der);
}

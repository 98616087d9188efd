//! Self-signed certificates made in the test, for services that serve HTTPS.

use std::path::Path;

use tokio_rustls::rustls::pki_types::CertificateDer;

use super::{RunningService, start_service};

/// A self-signed certificate for `localhost`: its DER, and the PEM files of it and its key.
pub struct Certificate {
    pub der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn self_signed() -> Certificate {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("rcgen makes a certificate");
    Certificate {
        der: made.cert.der().clone(),
        cert_pem: made.cert.pem(),
        key_pem: made.signing_key.serialize_pem(),
    }
}

/// The files [`install`] writes and [`serve_https`] serves.
const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";

/// Writes `certificate` as `cert.pem` and `key.pem` into `folder`.
pub fn install(certificate: &Certificate, folder: &Path) {
    std::fs::write(folder.join(CERT_FILE), &certificate.cert_pem).expect("write cert");
    std::fs::write(folder.join(KEY_FILE), &certificate.key_pem).expect("write key");
}

/// `callfold serve` on `database_url`, over HTTPS with the certificate [`install`]ed in
/// `folder` (a SIGHUP makes it read the files there again).
pub async fn serve_https(database_url: &str, folder: &Path) -> RunningService {
    let (cert, key) = (folder.join(CERT_FILE), folder.join(KEY_FILE));
    let env = [
        ("CALLFOLD_TLS_CERT", cert.to_str().expect("utf-8 path")),
        ("CALLFOLD_TLS_KEY", key.to_str().expect("utf-8 path")),
    ];
    start_service("serve", database_url, &env).await
}

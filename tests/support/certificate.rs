//! Self-signed certificates made in the test, for services that serve HTTPS.

use std::path::Path;

use tokio_rustls::rustls::pki_types::CertificateDer;

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

/// Writes `certificate` as `cert.pem` and `key.pem` into `folder`.
pub fn install(certificate: &Certificate, folder: &Path) {
    std::fs::write(folder.join("cert.pem"), &certificate.cert_pem).expect("write cert");
    std::fs::write(folder.join("key.pem"), &certificate.key_pem).expect("write key");
}

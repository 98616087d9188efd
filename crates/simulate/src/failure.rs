//! What went wrong with one simulated request, said so that an operator can act on it: the
//! receiver's status and body, or the transport error with its whole cause chain, and a hint
//! when the receiver's certificate is not trusted.

use std::error::Error;
use std::fmt;

/// The most of a receiver's answer body a failure keeps.
const BODY_LIMIT: usize = 500;

/// One failed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Where it was sent.
    pub url: String,
    /// The answer's status, when one came.
    pub status: Option<u16>,
    /// The answer's body (up to 500 bytes, as text), or the transport error and its causes.
    pub detail: String,
    /// The receiver's certificate was not trusted.
    pub untrusted_certificate: bool,
}

impl Failure {
    /// The receiver answered `status` (not a 2xx with a receipt) with `body`.
    pub fn answered(url: &str, status: Option<u16>, body: &[u8]) -> Self {
        let shown = String::from_utf8_lossy(&body[..body.len().min(BODY_LIMIT)]);
        let cut = if body.len() > BODY_LIMIT { "..." } else { "" };
        Self {
            url: url.to_owned(),
            status,
            detail: format!("{}{cut}", shown.trim_end()),
            untrusted_certificate: false,
        }
    }

    /// No answer came: `error` and each of its causes.
    pub fn unanswered(url: &str, error: &(dyn Error + 'static)) -> Self {
        let mut detail = error.to_string();
        let mut untrusted_certificate = false;
        let mut cause = Some(error);
        while let Some(current) = cause {
            untrusted_certificate |= is_certificate_error(current);
            if let Some(source) = current.source() {
                let text = source.to_string();
                // Some errors repeat their source's text in their own.
                if !detail.ends_with(&text) {
                    detail.push_str(": ");
                    detail.push_str(&text);
                }
            }
            cause = current.source();
        }
        Self {
            url: url.to_owned(),
            status: None,
            detail,
            untrusted_certificate,
        }
    }
}

/// A TLS error about the peer's certificate. rustls's errors reach the client wrapped in
/// `io::Error`s (an `io::Error`'s `source` skips the error it wraps), so each wrapped error is
/// looked at too.
fn is_certificate_error(error: &(dyn Error + 'static)) -> bool {
    let mut current = error;
    loop {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return matches!(tls, rustls::Error::InvalidCertificate(_));
        }
        let wrapped = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        match wrapped {
            Some(inner) => current = inner,
            None => return false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "{} answered {status}: {}", self.url, self.detail)?,
            None => write!(f, "{}: {}", self.url, self.detail)?,
        }
        if self.untrusted_certificate {
            write!(
                f,
                " (the receiver's certificate is not trusted; for a self-signed certificate \
                 in a test setup, pass --insecure)"
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_keeps_its_status_and_at_most_500_bytes_of_body() {
        let long = vec![b'x'; 2_000];
        let failure = Failure::answered("http://r/webhooks/allo", Some(503), &long);
        assert_eq!(failure.status, Some(503));
        assert_eq!(failure.detail.len(), BODY_LIMIT + "...".len());
        let shown = Failure::answered("http://r/webhooks/allo", Some(401), b"{\"error\":\"no\"}\n");
        assert_eq!(
            shown.to_string(),
            "http://r/webhooks/allo answered 401: {\"error\":\"no\"}"
        );
    }

    #[test]
    fn a_transport_error_shows_its_cause_chain_and_a_certificate_error_the_hint() {
        let certificate =
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, certificate);
        let io = std::io::Error::other(io);
        let failure = Failure::unanswered("https://r/webhooks/allo", &io);
        assert!(failure.untrusted_certificate);
        assert!(failure.to_string().contains("--insecure"), "{failure}");

        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let failure = Failure::unanswered("http://r/webhooks/allo", &refused);
        assert!(!failure.untrusted_certificate);
        assert!(failure.detail.contains("refused"), "{}", failure.detail);
    }
}

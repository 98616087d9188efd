//! Standard Webhooks (scheme v1) signatures: the strict grammar of the three `webhook-*`
//! headers, verification of a delivery against several secrets with a timestamp tolerance, and
//! signing (for `callfold simulate` and tests).
//!
//! Verification runs over the exact raw body bytes, before any JSON parsing. The signed content
//! is `{webhook-id}.{webhook-timestamp}.{body}`; the signature is HMAC-SHA256 with the secret's
//! key, base64 encoded. One matching `v1` entry is enough; entries of other versions are
//! skipped; comparisons are constant-time. The signature is checked before the timestamp, so a
//! stale or future timestamp is only reported (with its distance) for an authentic delivery:
//! that distance is a measure of clock skew no forger can move.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use callfold_store::WebhookId;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;

use crate::secret::{Secret, WebhookSecrets};

/// Header carrying the message id.
pub const WEBHOOK_ID: &str = "webhook-id";
/// Header carrying the Unix seconds of the attempt.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the space-separated `version,base64` signatures.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// More entries than any rotation needs; the bound keeps a hostile header cheap to reject.
const MAX_SIGNATURE_ENTRIES: usize = 64;
/// An HMAC-SHA256 digest's length.
const DIGEST_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// The parsed `webhook-*` headers of one delivery.
#[derive(Clone, Debug)]
pub struct SignedHeaders {
    /// The message id, the dedup key.
    pub webhook_id: WebhookId,
    /// Unix seconds of this attempt.
    pub timestamp: i64,
    /// The digests of the `v1` entries; other versions are dropped while parsing.
    v1_signatures: Vec<[u8; DIGEST_LEN]>,
}

/// A `webhook-*` header is missing or breaks the grammar. Answered with 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    /// The header is absent.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// The header is present but malformed.
    #[error("malformed {header} header: {problem}")]
    Malformed {
        /// Which header.
        header: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// The headers parse, but the delivery is not provably Allo's now. Answered with 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The delivery is authentic, but its timestamp is too far from the receiver's clock.
    #[error(
        "webhook-timestamp is {skew_secs} s from the receiver's clock (positive: behind it), \
         outside the accepted tolerance of {tolerance_secs} s"
    )]
    OutsideTolerance {
        /// The receiver's clock minus `webhook-timestamp`, in seconds.
        skew_secs: i64,
        /// The configured tolerance.
        tolerance_secs: u64,
    },
    /// No `v1` entry matches any configured secret.
    #[error("no v1 signature matches")]
    NoMatchingSignature,
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, HeaderError> {
    let value = headers.get(name).ok_or(HeaderError::Missing(name))?;
    value.to_str().map_err(|_| HeaderError::Malformed {
        header: name,
        problem: "not visible ASCII",
    })
}

impl SignedHeaders {
    /// Parses the three headers strictly: an id of printable ASCII, a timestamp of digits only,
    /// and signature entries `version,payload` where every `v1` payload is the standard base64
    /// of 32 bytes.
    pub fn parse(headers: &HeaderMap) -> Result<Self, HeaderError> {
        let webhook_id =
            WebhookId::parse(header(headers, WEBHOOK_ID)?).map_err(|_| HeaderError::Malformed {
                header: WEBHOOK_ID,
                problem: "must be 1 to 256 printable ASCII characters without spaces",
            })?;
        let timestamp = parse_timestamp(header(headers, WEBHOOK_TIMESTAMP)?)?;
        let v1_signatures = parse_signatures(header(headers, WEBHOOK_SIGNATURE)?)?;
        Ok(Self {
            webhook_id,
            timestamp,
            v1_signatures,
        })
    }
}

fn parse_timestamp(text: &str) -> Result<i64, HeaderError> {
    let malformed = |problem| HeaderError::Malformed {
        header: WEBHOOK_TIMESTAMP,
        problem,
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("must be Unix seconds, digits only"));
    }
    text.parse().map_err(|_| malformed("out of range"))
}

fn parse_signatures(text: &str) -> Result<Vec<[u8; DIGEST_LEN]>, HeaderError> {
    let malformed = |problem| HeaderError::Malformed {
        header: WEBHOOK_SIGNATURE,
        problem,
    };
    let entries: Vec<&str> = text.split_ascii_whitespace().collect();
    if entries.is_empty() {
        return Err(malformed("no signature entries"));
    }
    if entries.len() > MAX_SIGNATURE_ENTRIES {
        return Err(malformed("more than 64 signature entries"));
    }
    let mut v1_signatures = Vec::new();
    for entry in entries {
        let (version, payload) = entry
            .split_once(',')
            .ok_or(malformed("an entry is not version,signature"))?;
        if version != "v1" {
            continue;
        }
        let digest = STANDARD
            .decode(payload)
            .ok()
            .and_then(|bytes| <[u8; DIGEST_LEN]>::try_from(bytes).ok())
            .ok_or(malformed(
                "a v1 signature is not the standard base64 of 32 bytes",
            ))?;
        v1_signatures.push(digest);
    }
    Ok(v1_signatures)
}

/// Checks deliveries against the configured secrets and clock tolerance.
#[derive(Clone, Debug)]
pub struct Verifier {
    secrets: WebhookSecrets,
    tolerance_secs: u64,
}

impl Verifier {
    /// A verifier accepting any of `secrets`, for attempts at most `tolerance_secs` from `now`.
    pub fn new(secrets: WebhookSecrets, tolerance_secs: u64) -> Self {
        Self {
            secrets,
            tolerance_secs,
        }
    }

    /// Verifies one delivery as of `now_unix` (the receiver's clock, Unix seconds): first the
    /// signature, then the timestamp.
    pub fn verify(
        &self,
        headers: &SignedHeaders,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), VerifyError> {
        let matches = self.secrets.iter().any(|secret| {
            let mac = keyed_content_mac(secret, &headers.webhook_id, headers.timestamp, body);
            headers
                .v1_signatures
                .iter()
                .any(|digest| mac.clone().verify_slice(digest).is_ok())
        });
        if !matches {
            return Err(VerifyError::NoMatchingSignature);
        }
        if now_unix.abs_diff(headers.timestamp) > self.tolerance_secs {
            return Err(VerifyError::OutsideTolerance {
                skew_secs: now_unix.saturating_sub(headers.timestamp),
                tolerance_secs: self.tolerance_secs,
            });
        }
        Ok(())
    }
}

/// The HMAC state after feeding it the signed content `{id}.{timestamp}.{body}`.
fn keyed_content_mac(
    secret: &Secret,
    webhook_id: &WebhookId,
    timestamp: i64,
    body: &[u8],
) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.key()).expect("HMAC takes keys of any length");
    mac.update(webhook_id.as_str().as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` header value a Standard Webhooks sender would send: `v1,<base64>`.
pub fn sign(secret: &Secret, webhook_id: &WebhookId, timestamp: i64, body: &[u8]) -> String {
    let digest = keyed_content_mac(secret, webhook_id, timestamp, body).finalize();
    format!("v1,{}", STANDARD.encode(digest.into_bytes()))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(id: &str, timestamp: &str, signature: &[u8]) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(WEBHOOK_ID, HeaderValue::from_str(id).expect("test id"));
        map.insert(
            WEBHOOK_TIMESTAMP,
            HeaderValue::from_str(timestamp).expect("test ts"),
        );
        map.insert(
            WEBHOOK_SIGNATURE,
            HeaderValue::from_bytes(signature).expect("test sig"),
        );
        map
    }

    const DIGEST_B64: &str = "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn timestamp_must_be_digits_only() {
        for bad in [
            "",
            "-5",
            "+5",
            "1e9",
            " 5",
            "1649367553.0",
            "99999999999999999999",
        ] {
            let sig = format!("v1,{DIGEST_B64}");
            let error =
                SignedHeaders::parse(&headers("msg_1", bad, sig.as_bytes())).expect_err(bad);
            assert!(
                matches!(
                    error,
                    HeaderError::Malformed {
                        header: WEBHOOK_TIMESTAMP,
                        ..
                    }
                ),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn signature_entries_follow_the_grammar() {
        let rejected: [&str; 5] = [
            "",
            "v1",
            "v1,not-base64!",
            "v1,AAAA",
            &format!("v1,{}", DIGEST_B64.trim_end_matches('=')),
        ];
        for bad in rejected {
            let error =
                SignedHeaders::parse(&headers("msg_1", "1", bad.as_bytes())).expect_err(bad);
            assert!(
                matches!(
                    error,
                    HeaderError::Malformed {
                        header: WEBHOOK_SIGNATURE,
                        ..
                    }
                ),
                "{bad:?}: {error}"
            );
        }
        let mixed = format!("v2,whatever v1,{DIGEST_B64}  v1a,xyz");
        let parsed = SignedHeaders::parse(&headers("msg_1", "1", mixed.as_bytes())).expect("ok");
        assert_eq!(parsed.v1_signatures.len(), 1);
    }

    #[test]
    fn too_many_signature_entries_are_refused() {
        let many = vec![format!("v1,{DIGEST_B64}"); MAX_SIGNATURE_ENTRIES + 1].join(" ");
        let error =
            SignedHeaders::parse(&headers("msg_1", "1", many.as_bytes())).expect_err("many");
        assert!(matches!(error, HeaderError::Malformed { .. }), "{error}");
    }

    #[test]
    fn missing_and_non_ascii_headers_are_named() {
        let mut map = headers("msg_1", "1", b"v1,x");
        map.remove(WEBHOOK_ID);
        assert_eq!(
            SignedHeaders::parse(&map).expect_err("missing id"),
            HeaderError::Missing(WEBHOOK_ID)
        );
        let map = headers("msg_1", "1", b"v1,\xff");
        let error = SignedHeaders::parse(&map).expect_err("non-ascii");
        assert!(error.to_string().contains(WEBHOOK_SIGNATURE), "{error}");
    }

    /// A verifier with one secret, and headers signing `body` with it at t=1000.
    fn signed_at_1000(body: &[u8]) -> (Verifier, SignedHeaders) {
        let secrets = WebhookSecrets::parse("whsec_a2V5").expect("secret");
        let secret = secrets.iter().next().expect("one").clone();
        let id = WebhookId::parse("msg_1").expect("id");
        let signature = sign(&secret, &id, 1000, body);
        let parsed =
            SignedHeaders::parse(&headers("msg_1", "1000", signature.as_bytes())).expect("parses");
        (Verifier::new(secrets, 300), parsed)
    }

    #[test]
    fn a_signature_made_by_sign_verifies_and_a_tampered_body_does_not() {
        let (verifier, parsed) = signed_at_1000(b"{}");
        assert_eq!(verifier.verify(&parsed, b"{}", 1000), Ok(()));
        assert_eq!(
            verifier.verify(&parsed, b"{} ", 1000),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn tolerance_is_inclusive_in_both_directions() {
        let (verifier, parsed) = signed_at_1000(b"{}");
        for now in [700, 1300] {
            assert_eq!(verifier.verify(&parsed, b"{}", now), Ok(()), "now={now}");
        }
        for (now, skew_secs) in [(699, -301), (1301, 301), (i64::MAX, i64::MAX - 1000)] {
            assert_eq!(
                verifier.verify(&parsed, b"{}", now),
                Err(VerifyError::OutsideTolerance {
                    skew_secs,
                    tolerance_secs: 300
                }),
                "now={now}"
            );
        }
        assert_eq!(
            verifier.verify(&parsed, b"{} ", 1301),
            Err(VerifyError::NoMatchingSignature),
            "a forged delivery is never told about the clock"
        );
    }
}

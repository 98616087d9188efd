//! Webhook signing secrets: parsed from `whsec_<base64>` once, held as key bytes, and never
//! shown. `Debug` prints a placeholder, and there is deliberately no `Display`.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The environment variable that holds the receiver's secrets (never a command-line flag, so
/// they do not show in process listings).
pub const SECRETS_ENV: &str = "CALLFOLD_WEBHOOK_SECRETS";

const PREFIX: &str = "whsec_";

/// One HMAC key, as Allo shows it: `whsec_` followed by the standard base64 of the key bytes.
/// Keys of any non-zero length are accepted (real senders use keys shorter than the spec's 24).
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a configured secret is unusable. Never contains the secret itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidSecret {
    /// Nothing was configured.
    #[error(
        "no webhook secret configured: set {SECRETS_ENV} to the signing secret shown in Allo's \
         webhook settings (whsec_...); during a rotation give both, separated by a space or a comma"
    )]
    Missing,
    /// An entry lacks the `whsec_` prefix.
    #[error("secret #{position} in {SECRETS_ENV} does not start with whsec_")]
    NoPrefix {
        /// 1-based position in the list.
        position: usize,
    },
    /// An entry's key part is not standard base64, or is empty.
    #[error("secret #{position} in {SECRETS_ENV} is not whsec_ followed by standard base64")]
    NotBase64 {
        /// 1-based position in the list.
        position: usize,
    },
}

impl Secret {
    fn parse(text: &str, position: usize) -> Result<Self, InvalidSecret> {
        let encoded = text
            .strip_prefix(PREFIX)
            .ok_or(InvalidSecret::NoPrefix { position })?;
        match STANDARD.decode(encoded) {
            Ok(key) if !key.is_empty() => Ok(Self { key }),
            _ => Err(InvalidSecret::NotBase64 { position }),
        }
    }

    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }
}

/// The secrets a receiver accepts: one normally, several during a rotation.
#[derive(Clone, Debug)]
pub struct WebhookSecrets(Vec<Secret>);

impl WebhookSecrets {
    /// Parses a list of `whsec_...` secrets separated by spaces and/or commas.
    pub fn parse(list: &str) -> Result<Self, InvalidSecret> {
        let secrets = list
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|entry| !entry.is_empty())
            .enumerate()
            .map(|(index, entry)| Secret::parse(entry, index + 1))
            .collect::<Result<Vec<_>, _>>()?;
        if secrets.is_empty() {
            return Err(InvalidSecret::Missing);
        }
        Ok(Self(secrets))
    }

    /// Reads and parses [`SECRETS_ENV`].
    pub fn from_env() -> Result<Self, InvalidSecret> {
        Self::parse(&std::env::var(SECRETS_ENV).unwrap_or_default())
    }

    /// The secrets, newest rotation order as configured.
    pub fn iter(&self) -> impl Iterator<Item = &Secret> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_split_on_spaces_and_commas() {
        let secrets =
            WebhookSecrets::parse(" whsec_AAEC, whsec_AwQF  whsec_Bgc= ").expect("parses");
        let keys: Vec<&[u8]> = secrets.iter().map(Secret::key).collect();
        assert_eq!(keys, [&[0u8, 1, 2][..], &[3, 4, 5], &[6, 7]]);
    }

    #[test]
    fn missing_or_malformed_secrets_name_the_problem_and_the_position() {
        let error = |list| WebhookSecrets::parse(list).expect_err(list);
        assert_eq!(error(" , "), InvalidSecret::Missing);
        assert_eq!(
            error("whsec_AAEC sk_live"),
            InvalidSecret::NoPrefix { position: 2 }
        );
        assert_eq!(error("whsec_!!!"), InvalidSecret::NotBase64 { position: 1 });
        assert!(InvalidSecret::Missing.to_string().contains(SECRETS_ENV));
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let secrets = WebhookSecrets::parse("whsec_c2VjcmV0LWtleQ==").expect("parses");
        let shown = format!("{secrets:?}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(!shown.contains("115, 101"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}

//! The warning an operator sees when deliveries are refused before they prove to be Allo's
//! (a wrong signing secret, a clock out of tolerance, bad headers, a body too large or too
//! slow): one `warn` line per reason at most every [`WARNING_INTERVAL`], with the reason, the
//! source address, what to check, and how many refusals of that reason the previous
//! interval kept quiet. Never a body, a header's value or a secret. Anyone can send such
//! requests, so the log cannot be flooded with them; the counts and the latest refusals stay
//! available in full at `/v1/rejections`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Least time between two warnings of the same reason.
pub const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// When each reason last warned, and how many refusals it kept quiet since.
#[derive(Debug, Default)]
pub struct RefusalWarnings {
    reasons: BTreeMap<&'static str, Quieted>,
}

#[derive(Debug)]
struct Quieted {
    warned_at: Instant,
    since: u64,
}

impl RefusalWarnings {
    /// Notes a refusal for `reason` at `now`: `Some(n)` when it is to be logged, `n` being the
    /// refusals of that reason not logged since the previous line; `None` to keep quiet.
    fn admit(&mut self, reason: &'static str, now: Instant) -> Option<u64> {
        match self.reasons.get_mut(reason) {
            Some(quieted) if now.duration_since(quieted.warned_at) < WARNING_INTERVAL => {
                quieted.since += 1;
                None
            }
            Some(quieted) => {
                let suppressed = quieted.since;
                *quieted = Quieted {
                    warned_at: now,
                    since: 0,
                };
                Some(suppressed)
            }
            None => {
                let quieted = Quieted {
                    warned_at: now,
                    since: 0,
                };
                self.reasons.insert(reason, quieted);
                Some(0)
            }
        }
    }

    /// Logs the refusal of a request from `source` for `reason`, unless that reason warned
    /// within the last [`WARNING_INTERVAL`].
    pub fn warn(&mut self, reason: &'static str, source: Option<SocketAddr>) {
        let Some(suppressed) = self.admit(reason, Instant::now()) else {
            return;
        };
        let source = source.map_or_else(|| "unknown".to_owned(), |addr| addr.to_string());
        // A root event: the request's span would add its webhook-id, a header's value from a
        // sender not known to be Allo.
        tracing::warn!(
            parent: None,
            reason,
            source = %source,
            suppressed,
            interval_s = WARNING_INTERVAL.as_secs(),
            hint = hint(reason),
            "delivery refused"
        );
    }
}

/// What an operator should check for a refusal of `reason`.
fn hint(reason: &str) -> &'static str {
    match reason {
        "bad_signature" => {
            "no configured secret signs it: compare CALLFOLD_WEBHOOK_SECRETS with the signing \
             secret in Allo's webhook settings"
        }
        "stale_timestamp" => {
            "authentic but its webhook-timestamp is outside --tolerance: check this host's clock"
        }
        "bad_request" => "webhook-id, webhook-timestamp or webhook-signature missing or malformed",
        "too_large" => "the body is over --max-body",
        "slow_body" => "the body did not arrive within --body-read-timeout-ms",
        _ => "see /v1/rejections",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_reason_per_interval_then_the_count_of_those_kept_quiet() {
        let mut warnings = RefusalWarnings::default();
        let start = Instant::now();
        assert_eq!(warnings.admit("bad_signature", start), Some(0));
        for _ in 0..5 {
            assert_eq!(
                warnings.admit("bad_signature", start + Duration::from_secs(1)),
                None
            );
        }
        assert_eq!(
            warnings.admit("bad_request", start + Duration::from_secs(2)),
            Some(0),
            "each reason has its own interval"
        );
        let later = start + WARNING_INTERVAL;
        assert_eq!(warnings.admit("bad_signature", later), Some(5));
        assert_eq!(warnings.admit("bad_signature", later), None);
        assert_eq!(
            warnings.admit("bad_signature", later + WARNING_INTERVAL),
            Some(1)
        );
    }
}

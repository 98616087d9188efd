//! Secure by default: the check, made before a service listens, that its private routes (the
//! query API, the quarantine and its re-drive, refusals, `/status`, `/metrics`) are not served
//! to anyone who can reach the machine by accident.
//!
//! The private routes may be served without `CALLFOLD_API_TOKEN` only on a loopback address
//! (127.0.0.0/8, ::1), or, with `--admin-listen`, on an address of a private range (the
//! operator's statement that the listener is private; callfold checks only that it is neither
//! public nor every interface). `--allow-public-api` lifts the rule, for a service whose
//! network already restricts who can reach it. The webhook endpoint alone is public by design:
//! everything it accepts is signed.

use std::net::{IpAddr, SocketAddr};

use crate::settings::Settings;

/// Ok when an app with `settings` may serve its private routes on `listen` (or, when given, on
/// `admin_listen`); otherwise an error naming the risk and the ways out.
pub fn check(
    listen: SocketAddr,
    admin_listen: Option<SocketAddr>,
    settings: &Settings,
) -> anyhow::Result<()> {
    if settings.api_token.is_some() || settings.allow_public_api {
        return Ok(());
    }
    let (addr, private_enough) = match admin_listen {
        None => (listen, is_loopback(listen.ip())),
        Some(admin) => (admin, is_loopback(admin.ip()) || is_private(admin.ip())),
    };
    if private_enough {
        return Ok(());
    }
    let option = if admin_listen.is_some() {
        "--admin-listen"
    } else {
        "--listen"
    };
    anyhow::bail!(
        "refusing to serve the query API, the quarantine (with its re-drive), /status and \
         /metrics on {addr} ({option}) without CALLFOLD_API_TOKEN: anyone who can reach that \
         address could read every call and re-drive records. Do one of: set \
         CALLFOLD_API_TOKEN (every /v1 and /status request then needs it); serve them on a \
         private address with --admin-listen (--listen then serves the webhook endpoint \
         alone); or, if the network in front already restricts who can reach {addr}, pass \
         --allow-public-api (CALLFOLD_ALLOW_PUBLIC_API=true)"
    )
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// An address of a range not routed on the internet: RFC 1918 and link-local for IPv4, unique
/// and link-local for IPv6. Every interface (`0.0.0.0`, `::`) is not one.
fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unique_local() || v6.is_unicast_link_local(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn loopback_is_127_slash_8_and_colon_colon_1_only() {
        for text in ["127.0.0.1", "127.9.8.7", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip(text)), "{text}");
        }
        for text in ["0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "203.0.113.5"] {
            assert!(!is_loopback(ip(text)), "{text}");
        }
    }

    #[test]
    fn private_ranges_exclude_public_addresses_and_every_interface() {
        for text in [
            "10.1.2.3",
            "172.16.0.9",
            "192.168.0.1",
            "169.254.1.1",
            "fd00::1",
        ] {
            assert!(is_private(ip(text)), "{text}");
        }
        for text in ["0.0.0.0", "::", "203.0.113.5", "172.32.0.1", "2001:db8::1"] {
            assert!(!is_private(ip(text)), "{text}");
        }
    }
}

//! The listen addresses operators write: `127.0.0.1:8080`, `[::1]:8080`, `localhost:8080`
//! (loopback, IPv4) and `:8080` (every IPv4 interface, as in Go and most servers; the
//! secure-by-default check then applies as for `0.0.0.0:8080`). A bad one is refused with the
//! forms that work.

use std::net::{Ipv4Addr, SocketAddr};

/// The forms `--listen` and `--admin-listen` take, for messages.
const FORMS: &str = "HOST:PORT, where HOST is an IP address (IPv6 in brackets: [::1]:8080), \
     localhost, or nothing for every interface (:8080)";

/// Parses a listen address in one of the forms above.
pub fn parse_listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("no port; expected {FORMS}"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("the port must be a number from 0 to 65535; expected {FORMS}"))?;
    let ip = match host {
        "" => Ipv4Addr::UNSPECIFIED,
        "localhost" => Ipv4Addr::LOCALHOST,
        _ if host.contains(':') && !host.starts_with('[') => {
            return Err(format!("an IPv6 address needs brackets; expected {FORMS}"));
        }
        _ => return Err(format!("not an IP address or localhost; expected {FORMS}")),
    };
    Ok(SocketAddr::from((ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> String {
        parse_listen_address(text)
            .unwrap_or_else(|error| panic!("{text}: {error}"))
            .to_string()
    }

    #[test]
    fn the_usual_forms_are_understood() {
        assert_eq!(parsed("127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(parsed("[::1]:8080"), "[::1]:8080");
        assert_eq!(parsed("localhost:8080"), "127.0.0.1:8080");
        assert_eq!(parsed(":8080"), "0.0.0.0:8080");
        assert_eq!(parsed("0.0.0.0:0"), "0.0.0.0:0");
    }

    #[test]
    fn a_bad_address_says_what_is_wrong_and_which_forms_work() {
        for (text, says) in [
            ("8080", "no port"),
            ("localhost:http", "the port must be a number"),
            ("localhost:70000", "the port must be a number"),
            ("::1:8080", "needs brackets"),
            ("example.com:8080", "not an IP address or localhost"),
        ] {
            let error = parse_listen_address(text).expect_err(text);
            assert!(error.contains(says), "{text}: {error}");
            assert!(error.contains(":8080"), "{text}: {error}");
        }
    }
}

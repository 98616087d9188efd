//! The start-up banner: one log line that says what this process is and where it is, so that
//! an operator reading the log knows which database it writes (password hidden), where Allo
//! must send webhooks, where the query API and metrics are, and whether a token guards `/v1`.

use std::net::SocketAddr;

use callfold_ingest::WEBHOOK_PATH;

use crate::database_url::DatabaseLocation;

/// What a service says about itself once it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Banner {
    /// `serve`, `ingest` or `projector`.
    pub role: &'static str,
    /// The database, without its password.
    pub database: String,
    /// Where Allo must send webhooks; `none` when the role does not receive them.
    pub webhook_url: String,
    /// Where the query API, `/status`, `/metrics` and the health checks are.
    pub admin_url: String,
    /// Whether `CALLFOLD_API_TOKEN` guards `/v1` and `/status`.
    pub api_token: &'static str,
}

/// Where a service listens and what guards it.
#[derive(Clone, Copy, Debug)]
pub struct Listening {
    /// The address `--listen` is bound to.
    pub public: SocketAddr,
    /// Whether `--listen` speaks HTTPS.
    pub https: bool,
    /// The address `--admin-listen` is bound to, if any.
    pub admin: Option<SocketAddr>,
    /// Whether this process receives webhooks.
    pub receives: bool,
    /// Whether this process runs a projector.
    pub projects: bool,
    /// Whether `CALLFOLD_API_TOKEN` is set.
    pub token_set: bool,
}

impl Banner {
    /// The banner of a service on `database_url`, listening as `listening` says.
    pub fn new(database_url: &str, listening: Listening) -> Self {
        let role = match (listening.receives, listening.projects) {
            (true, true) => "serve",
            (true, false) => "ingest",
            (false, _) => "projector",
        };
        let database = DatabaseLocation::parse(database_url)
            .map_or_else(|_| "unrecognised URL".to_owned(), |db| db.to_string());
        let scheme = if listening.https { "https" } else { "http" };
        let public = format!("{scheme}://{}", listening.public);
        let webhook_url = if listening.receives {
            format!("{public}{WEBHOOK_PATH}")
        } else {
            "none".to_owned()
        };
        let admin_url = listening
            .admin
            .map_or(public, |admin| format!("http://{admin}"));
        let api_token = if listening.token_set {
            "guards /v1"
        } else {
            "not set, /v1 is open"
        };
        Self {
            role,
            database,
            webhook_url,
            admin_url,
            api_token,
        }
    }

    /// Writes the banner as one info line.
    pub fn log(&self) {
        tracing::info!(
            role = self.role,
            database = %self.database,
            webhook_url = %self.webhook_url,
            admin_url = %self.admin_url,
            api_token = self.api_token,
            "callfold started"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn a_receiver_with_an_admin_listener_names_both_urls_and_hides_the_password() {
        let listening = Listening {
            public: addr("0.0.0.0:443"),
            https: true,
            admin: Some(addr("10.0.0.5:9090")),
            receives: true,
            projects: false,
            token_set: true,
        };
        let banner = Banner::new("postgres://app:s3cret@db:5432/calls", listening);
        assert_eq!(banner.role, "ingest");
        assert_eq!(banner.webhook_url, "https://0.0.0.0:443/webhooks/allo");
        assert_eq!(banner.admin_url, "http://10.0.0.5:9090");
        assert_eq!(
            banner.database,
            "PostgreSQL database calls at db:5432 as app"
        );
        assert_eq!(banner.api_token, "guards /v1");
        assert!(!format!("{banner:?}").contains("s3cret"));
    }

    #[test]
    fn a_projector_receives_nothing_and_serves_everything_on_its_listener() {
        let listening = Listening {
            public: addr("127.0.0.1:8080"),
            https: false,
            admin: None,
            receives: false,
            projects: true,
            token_set: false,
        };
        let banner = Banner::new("sqlite:callfold.db", listening);
        assert_eq!(banner.role, "projector");
        assert_eq!(banner.webhook_url, "none");
        assert_eq!(banner.admin_url, "http://127.0.0.1:8080");
        assert_eq!(banner.database, "SQLite ./callfold.db");
        assert_eq!(banner.api_token, "not set, /v1 is open");
    }
}

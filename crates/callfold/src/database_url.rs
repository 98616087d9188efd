//! What a `--database-url` / `DATABASE_URL` names, said without its password: the SQLite file
//! (or an in-memory database) or the PostgreSQL server, database and user. Every message that
//! names the database (the start-up banner, `config check`, connection failures) takes it from
//! here, so none of them can print a password.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

/// Where the event log lives, as a `--database-url` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseLocation {
    /// A SQLite file, as written in the URL (relative to the working folder unless absolute).
    SqliteFile(PathBuf),
    /// A SQLite database in memory, gone with the process.
    SqliteMemory,
    /// A PostgreSQL database.
    Postgres {
        /// The server: `host:port`, or the folder of its Unix socket.
        server: String,
        /// The database's name, when the URL gives one (else the server uses the user's).
        database: Option<String>,
        /// The user it connects as.
        user: String,
    },
}

impl DatabaseLocation {
    /// The location `url` names, or why it names none (without quoting it: it may hold a
    /// password).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => {
                if url.contains(":memory:") || url.contains("mode=memory") {
                    return Ok(Self::SqliteMemory);
                }
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(|_| anyhow::anyhow!("the SQLite URL is malformed"))?;
                Ok(Self::SqliteFile(options.get_filename().to_path_buf()))
            }
            "postgres" | "postgresql" => {
                let options = PgConnectOptions::from_str(url).map_err(|_| {
                    anyhow::anyhow!(
                        "the PostgreSQL URL is malformed (expected \
                         postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE)"
                    )
                })?;
                let server = match options.get_socket() {
                    Some(folder) => format!("the Unix socket in {}", folder.display()),
                    None => format!("{}:{}", options.get_host(), options.get_port()),
                };
                Ok(Self::Postgres {
                    server,
                    database: options.get_database().map(str::to_owned),
                    user: options.get_username().to_owned(),
                })
            }
            other => anyhow::bail!(
                "unsupported database URL (expected sqlite:PATH or postgres://...); got a URL \
                 starting with {other:?}"
            ),
        }
    }

    /// The SQLite file as a person would type it: `./callfold.db` for a relative path.
    pub fn sqlite_path_for_people(path: &Path) -> String {
        if path.is_absolute() || path.starts_with(".") || path.starts_with("..") {
            path.display().to_string()
        } else {
            Path::new(".").join(path).display().to_string()
        }
    }
}

impl fmt::Display for DatabaseLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SqliteFile(path) => {
                write!(f, "SQLite {}", Self::sqlite_path_for_people(path))
            }
            Self::SqliteMemory => f.write_str("SQLite in memory"),
            Self::Postgres {
                server,
                database,
                user,
            } => {
                let database = database.as_deref().unwrap_or(user);
                write!(f, "PostgreSQL database {database} at {server} as {user}")
            }
        }
    }
}

/// `url` with the password of its user, if any, replaced by `***`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((user_info, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match user_info.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_location_names_server_database_and_user_but_never_the_password() {
        let location = DatabaseLocation::parse("postgres://app:s3cret@db.internal:6543/calls")
            .expect("a valid URL");
        let said = location.to_string();
        assert_eq!(said, "PostgreSQL database calls at db.internal:6543 as app");
        assert!(!said.contains("s3cret"));
    }

    #[test]
    fn a_relative_sqlite_path_is_shown_from_the_working_folder() {
        let location = DatabaseLocation::parse("sqlite:callfold.db").expect("a valid URL");
        assert_eq!(location.to_string(), "SQLite ./callfold.db");
        let absolute = DatabaseLocation::parse("sqlite:/var/lib/callfold/log.db?mode=rwc")
            .expect("a valid URL");
        assert_eq!(absolute.to_string(), "SQLite /var/lib/callfold/log.db");
        let memory = DatabaseLocation::parse("sqlite::memory:").expect("a valid URL");
        assert_eq!(memory, DatabaseLocation::SqliteMemory);
    }

    #[test]
    fn an_unknown_scheme_is_refused_without_quoting_the_url() {
        let error = DatabaseLocation::parse("mysql://root:pw@h/db").expect_err("unsupported");
        assert!(!error.to_string().contains("pw"), "{error}");
    }

    #[test]
    fn redaction_hides_a_password_even_when_it_holds_an_at_sign() {
        assert_eq!(
            redact_password("postgres://app:p@ss@db/x"),
            "postgres://app:***@db/x"
        );
        assert_eq!(
            redact_password("postgres://app@db/x"),
            "postgres://app@db/x"
        );
        assert_eq!(redact_password("sqlite:callfold.db"), "sqlite:callfold.db");
    }
}

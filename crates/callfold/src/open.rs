//! Opening the store a command names, and saying plainly why it cannot be opened.
//!
//! The services and `migrate` create the database when it is missing and migrate it
//! ([`Access::CreateAndMigrate`]); every other command only works on a database that exists
//! and is migrated ([`Access::Existing`]), so that running one in the wrong folder, or against
//! the wrong server, says so instead of creating an empty database and answering from it.
//!
//! A failure is said once, with its root cause, where (the SQLite path, or the PostgreSQL
//! server, database and user: never the password) and what to check. On PostgreSQL one
//! connection is tried before the pools open: a pool retries a refused connection until its
//! acquire timeout and then reports only that it timed out.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use callfold_store::{Store, StoreError};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::cli::DatabaseArgs;
use crate::database_url::DatabaseLocation;

/// What a command may do to the database it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Create it if missing and apply pending migrations: the services and `migrate`.
    CreateAndMigrate,
    /// Use it only if it exists and is fully migrated: commands that inspect or fix records.
    Existing,
}

/// The store `args` name, opened as `access` allows, or an error that says what is wrong,
/// where, and what to do.
pub async fn open_store(args: &DatabaseArgs, access: Access) -> anyhow::Result<Store> {
    let location = DatabaseLocation::parse(&args.database_url)?;
    let limits = args.pool_limits();
    match &location {
        DatabaseLocation::SqliteFile(path) => check_sqlite_file(path, access)?,
        DatabaseLocation::SqliteMemory => {}
        DatabaseLocation::Postgres { .. } => {
            try_one_postgres_connection(&args.database_url, limits.acquire_timeout, &location)
                .await?
        }
    }
    let opened = match access {
        Access::CreateAndMigrate => Store::connect_with(&args.database_url, limits).await,
        Access::Existing => Store::connect_existing_with(&args.database_url, limits).await,
    };
    let store = opened.map_err(|error| cannot_open(&location, &error))?;
    match access {
        Access::CreateAndMigrate => store
            .migrate()
            .await
            .map_err(|error| anyhow::anyhow!("cannot migrate the {location}: {error}"))?,
        Access::Existing => match store.check_ready().await {
            Ok(()) => {}
            Err(StoreError::NotMigrated { applied, known }) => anyhow::bail!(
                "the {location} is not migrated ({applied} of {known} migrations applied); run \
                 `callfold migrate` with the same --database-url (or DATABASE_URL) first"
            ),
            Err(error) => return Err(cannot_open(&location, &error)),
        },
    }
    Ok(store)
}

/// Refuses, before anything is created, a SQLite file that must exist and does not, or one to
/// create in a folder that does not exist.
fn check_sqlite_file(path: &Path, access: Access) -> anyhow::Result<()> {
    let shown = DatabaseLocation::sqlite_path_for_people(path);
    match access {
        Access::Existing if !path.exists() => anyhow::bail!(
            "no database at {shown}{}; set DATABASE_URL or --database-url",
            working_folder_note(path)
        ),
        Access::CreateAndMigrate => {
            let folder = path
                .parent()
                .filter(|folder| !folder.as_os_str().is_empty());
            if let Some(folder) = folder.filter(|folder| !folder.is_dir()) {
                anyhow::bail!(
                    "cannot create the SQLite database {shown}: the folder {} does not exist; \
                     create it, or set DATABASE_URL or --database-url to a path in a folder \
                     that exists",
                    folder.display()
                );
            }
            Ok(())
        }
        Access::Existing => Ok(()),
    }
}

/// ` (in /the/working/folder)` for a relative path, so that the message says where it looked.
fn working_folder_note(path: &Path) -> String {
    match std::env::current_dir() {
        Ok(folder) if path.is_relative() => format!(" (in {})", folder.display()),
        _ => String::new(),
    }
}

/// Opens, and closes, one connection to the PostgreSQL server of `url`, waiting at most
/// `timeout`: the connection's own error, said with the server and a hint.
async fn try_one_postgres_connection(
    url: &str,
    timeout: Duration,
    location: &DatabaseLocation,
) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|_| anyhow::anyhow!("the PostgreSQL URL is malformed"))?;
    match tokio::time::timeout(timeout, PgConnection::connect_with(&options)).await {
        Ok(Ok(connection)) => {
            // Closing is a courtesy to the server; a failure to close changes nothing here.
            let _ = connection.close().await;
            Ok(())
        }
        Ok(Err(error)) => Err(explain_postgres(location, &error)),
        Err(_) => anyhow::bail!(
            "cannot connect to the {location}: no answer within {} ms (--db-acquire-timeout-ms); \
             is the address right, and does a firewall let the connection through?",
            timeout.as_millis()
        ),
    }
}

/// A PostgreSQL connection's failure: its cause once, where, and what to check.
fn explain_postgres(location: &DatabaseLocation, error: &sqlx::Error) -> anyhow::Error {
    let server = match location {
        DatabaseLocation::Postgres { server, .. } => server.as_str(),
        _ => "the server",
    };
    match error {
        sqlx::Error::Io(cause) => anyhow::anyhow!(
            "cannot connect to the {location}: {cause}; is PostgreSQL running at {server}, and \
             are the host and port in DATABASE_URL (or --database-url) right?"
        ),
        sqlx::Error::Database(refusal) => {
            let hint = match refusal.code().as_deref() {
                Some("3D000") => "; create the database (createdb), or name another one",
                Some("28P01" | "28000") => "; check the user and password in DATABASE_URL",
                _ => "",
            };
            anyhow::anyhow!(
                "the {location} refused the connection: {}{hint}",
                refusal.message()
            )
        }
        other => anyhow::anyhow!("cannot connect to the {location}: {other}"),
    }
}

/// The failure to open the pools of `location`, said once, with a hint where one helps.
fn cannot_open(location: &DatabaseLocation, error: &StoreError) -> anyhow::Error {
    match (location, error) {
        (DatabaseLocation::Postgres { .. }, StoreError::Database(cause)) => {
            explain_postgres(location, cause)
        }
        (
            DatabaseLocation::SqliteFile(path),
            StoreError::Database(sqlx::Error::Database(cause)),
        ) => {
            let shown = DatabaseLocation::sqlite_path_for_people(path);
            anyhow::anyhow!(
                "cannot open the SQLite database {shown}: {}; check that the file and its folder \
                 exist and that this user may read and write them",
                cause.message()
            )
        }
        (_, error) => anyhow::anyhow!("cannot open the {location}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_database_is_required_where_only_reading() {
        let folder = tempfile::tempdir().expect("temp dir");
        let missing = folder.path().join("callfold.db");
        let error = check_sqlite_file(&missing, Access::Existing).expect_err("no file");
        let said = error.to_string();
        assert!(said.starts_with("no database at "), "{said}");
        assert!(said.contains(&missing.display().to_string()), "{said}");
        assert!(check_sqlite_file(&missing, Access::CreateAndMigrate).is_ok());
        assert!(!missing.exists(), "the check creates nothing");
    }

    #[test]
    fn a_missing_folder_is_named_before_anything_is_created() {
        let folder = tempfile::tempdir().expect("temp dir");
        let missing_folder = folder.path().join("no-such-folder");
        let path = missing_folder.join("callfold.db");
        let error = check_sqlite_file(&path, Access::CreateAndMigrate).expect_err("no folder");
        let said = error.to_string();
        assert!(said.contains(&path.display().to_string()), "{said}");
        assert!(
            said.contains(&format!(
                "the folder {} does not exist",
                missing_folder.display()
            )),
            "{said}"
        );
    }
}

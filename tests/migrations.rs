//! The committed migrations are pinned: every file of `migrations/sqlite` and
//! `migrations/postgres` must have the version, description and checksum listed here, as sqlx
//! reads them (the checksum is the SHA-384 of the file's bytes, which sqlx compares at start-up
//! with the one recorded when the migration was applied). A database that applied a migration
//! refuses to start once its file changes, so a committed migration is never edited: a change
//! to the schema is a new migration, pinned here when it is committed.

use std::path::{Path, PathBuf};

use sqlx::migrate::Migrator;

/// A committed migration: (version, description, checksum as lowercase hex).
type Pinned = (i64, &'static str, &'static str);

const SQLITE: &[Pinned] = &[
    (
        1,
        "event log",
        "d18953b764c74e59e45b2255cc6c2f76e9e9f2a03d23276da48d4036dfeeedf4940ffbc9ef5f15973dd73ad56d466836",
    ),
    (
        2,
        "call projections",
        "9994a9898a98215897ce44fb139ceca7c65f9cfbb1580201d8533251b2557b653b617ec22e5a1888d1fb73ab0ec0108f",
    ),
    (
        3,
        "call projections rebuild",
        "2634c8b8f873e0144632d2441e1d97529ae86e67238722b1ee7ef6ef58a815ee09a253b5ea0d7e77652306cbfef8724d",
    ),
    (
        4,
        "notify appends",
        "77ea2ebb15e6242a5c7ac524d77167548ad458fb8752f892d123380c89cf9ec10dc4a783a83318433ea8ae8af84e6a09",
    ),
    (
        5,
        "fold queue",
        "d9abd435e37839a5ede6c897b606d69968afacbbe008d76ff21c8f4673c6a0a4848778a728e52ebefa75fa621aac76b2",
    ),
    (
        6,
        "projection changes",
        "2ebf3bfbce67bf3eb42e7740395759687cf5c44027d0e60277297f1f2ae3c25d71c615373f6b9714beb28033bef43262",
    ),
    (
        7,
        "quarantine index",
        "b3a1aac11f646498b77706e133df8e5c0fc964a982803662583cd24273ab2de9d4b73417aad0236d5905fcf68f894fe1",
    ),
    (
        9,
        "log counts",
        "25c513012da7f01dedd0329e7235411a308c89a89aa7b9740f55623e7ea1c1ad38d6cca83f5d5c7c30f14eae1d6c89c2",
    ),
    (
        10,
        "kept records order",
        "4da2d3e084da51e86a34d1e312e50d9d90712edbdfbebe98e0e52645a55291131b2bd2808e98b31b7480dd43d0711e62",
    ),
    (
        11,
        "projection configuration",
        "7028d8948c3c08c89a9ee7460685107f5a360877b4a1e214bb63594ae0b957a9a490fe248466ef71fd3e3e3f47d53114",
    ),
    (
        13,
        "storable keys",
        "f164e754e2d51c5316a66715549381edc865517f176612aa28acfa23a59ef6dddc6e357056d2d2abd27f71d6d46f7c22",
    ),
    (
        14,
        "stored per minute",
        "b537d7138003cc3c1e973e3dd803a31359241fffb8fad08c15bd7edcd105f09d4b01f27bfb9ce8616c9e3f747296ce64",
    ),
    (
        15,
        "fold queue by claim",
        "d4b27c4578e0cf84c1a915da7fe47848b77f6e1b96fc7c821838fac1d94363aa30e6ec2fbf7431ce936ac464869cfd50",
    ),
    (
        16,
        "fold queue by call",
        "7e2f6596b8d3aef4c5364054ef600a87c1263c867f2061ea362d0d1751019b14679285403258ea5cbb3f50847c3a8f23",
    ),
    (
        17,
        "fold queue swept in call order",
        "2c80e5da5a2a68513ca80e7c380e04b005e6daac306e3c72832b4a5b90554546d24e1ca78f1e06da887cf2316d3c15df",
    ),
    (
        18,
        "rebuild swaps as it reads",
        "f80263287e9ae2feca12c812ada6a8bd22395e056fcf83d941ebd3544825b49752ed0cea49b9eefceabc0e1788239751",
    ),
];

const POSTGRES: &[Pinned] = &[
    (
        1,
        "event log",
        "ae368d0edfc6dc55f361fa78538c49ffa8887a60b9982ccf60aae34bfe898f406487e599cbddf4b6aede47ea6a8d0539",
    ),
    (
        2,
        "call projections",
        "9994a9898a98215897ce44fb139ceca7c65f9cfbb1580201d8533251b2557b653b617ec22e5a1888d1fb73ab0ec0108f",
    ),
    (
        3,
        "call projections rebuild",
        "2634c8b8f873e0144632d2441e1d97529ae86e67238722b1ee7ef6ef58a815ee09a253b5ea0d7e77652306cbfef8724d",
    ),
    (
        4,
        "notify appends",
        "d81886b1ca37cd119bd99c43d86110c71de76573b447bd6264deacfa478399f5bf4e6de006d3329b4adda7021948a0c3",
    ),
    (
        5,
        "fold queue",
        "d9abd435e37839a5ede6c897b606d69968afacbbe008d76ff21c8f4673c6a0a4848778a728e52ebefa75fa621aac76b2",
    ),
    (
        6,
        "projection changes",
        "18bb03753ed419eed37538b4375264b34c098dc9f7c0ded898e5bdf4480534b275c4fa553b34d0566dd29b162f671c1c",
    ),
    (
        7,
        "quarantine index",
        "b3a1aac11f646498b77706e133df8e5c0fc964a982803662583cd24273ab2de9d4b73417aad0236d5905fcf68f894fe1",
    ),
    (
        9,
        "log counts",
        "25c513012da7f01dedd0329e7235411a308c89a89aa7b9740f55623e7ea1c1ad38d6cca83f5d5c7c30f14eae1d6c89c2",
    ),
    (
        10,
        "kept records order",
        "94020146d024c5b8ca0945fa12a31e710046574b80d39b61dd8771ae2480be8f4c9bd993beb5a694d756e9d22716e9ef",
    ),
    (
        11,
        "projection configuration",
        "7028d8948c3c08c89a9ee7460685107f5a360877b4a1e214bb63594ae0b957a9a490fe248466ef71fd3e3e3f47d53114",
    ),
    (
        13,
        "storable keys",
        "c96330b44e47d662c35182f776e5740bc39ae0c363fe07acd245858a98bd2618317cfa5c25d5f5f46b160dd6a845c655",
    ),
    (
        14,
        "stored per minute",
        "b537d7138003cc3c1e973e3dd803a31359241fffb8fad08c15bd7edcd105f09d4b01f27bfb9ce8616c9e3f747296ce64",
    ),
    (
        15,
        "fold queue by claim",
        "d4b27c4578e0cf84c1a915da7fe47848b77f6e1b96fc7c821838fac1d94363aa30e6ec2fbf7431ce936ac464869cfd50",
    ),
    (
        17,
        "fold queue swept in call order",
        "2c80e5da5a2a68513ca80e7c380e04b005e6daac306e3c72832b4a5b90554546d24e1ca78f1e06da887cf2316d3c15df",
    ),
    (
        18,
        "rebuild swaps as it reads",
        "f80263287e9ae2feca12c812ada6a8bd22395e056fcf83d941ebd3544825b49752ed0cea49b9eefceabc0e1788239751",
    ),
];

/// The folder of one backend's committed migrations.
fn committed(backend: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations")
        .join(backend)
}

/// What differs between the migrations in `folder`, as sqlx reads them, and `pinned`: one line
/// per migration changed, added without being pinned, or removed. Empty when they agree.
async fn departures_from(pinned: &[Pinned], folder: &Path) -> Vec<String> {
    let migrator = Migrator::new(folder)
        .await
        .unwrap_or_else(|error| panic!("sqlx cannot read {}: {error}", folder.display()));
    let found: Vec<(i64, String, String)> = migrator
        .iter()
        .map(|migration| {
            let checksum: String = migration
                .checksum
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
            (
                migration.version,
                migration.description.to_string(),
                checksum,
            )
        })
        .collect();
    let mut departures = Vec::new();
    for (version, description, checksum) in &found {
        match pinned.iter().find(|(pinned, ..)| pinned == version) {
            None => departures.push(format!(
                "migration {version} ({description}) is not pinned: once it is committed, add \
                 ({version}, \"{description}\", \"{checksum}\") to the table of this test"
            )),
            Some((_, pinned_description, pinned_checksum)) => {
                if (*pinned_description, *pinned_checksum)
                    != (description.as_str(), checksum.as_str())
                {
                    departures.push(format!(
                        "migration {version} ({pinned_description}) was edited after it was \
                         committed: never edit a committed migration (databases that applied it \
                         refuse to start); restore it and add a new migration instead"
                    ));
                }
            }
        }
    }
    for (version, description, _) in pinned {
        if !found.iter().any(|(found, ..)| found == version) {
            departures.push(format!(
                "migration {version} ({description}) was removed: never remove a committed \
                 migration; restore it"
            ));
        }
    }
    departures
}

/// Fails with every departure of `folder` from `pinned`.
async fn assert_pinned(pinned: &[Pinned], folder: &Path) {
    let departures = departures_from(pinned, folder).await;
    assert!(
        departures.is_empty(),
        "the migrations in {} are not the pinned ones:\n- {}",
        folder.display(),
        departures.join("\n- ")
    );
}

#[tokio::test]
async fn the_sqlite_migrations_are_the_committed_ones() {
    assert_pinned(SQLITE, &committed("sqlite")).await;
}

#[tokio::test]
async fn the_postgres_migrations_are_the_committed_ones() {
    assert_pinned(POSTGRES, &committed("postgres")).await;
}

/// A copy of the committed SQLite migrations, to change.
fn copy_of_sqlite_migrations() -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("a temporary folder");
    for entry in std::fs::read_dir(committed("sqlite")).expect("the migrations folder") {
        let path = entry.expect("a folder entry").path();
        let name = path.file_name().expect("a file name");
        std::fs::copy(&path, copy.path().join(name)).expect("a copied migration");
    }
    copy
}

#[tokio::test]
async fn one_byte_changed_in_a_committed_migration_is_a_departure() {
    let copy = copy_of_sqlite_migrations();
    assert_eq!(
        departures_from(SQLITE, copy.path()).await,
        Vec::<String>::new()
    );
    let edited = copy.path().join("0005_fold_queue.sql");
    let mut bytes = std::fs::read(&edited).expect("the migration");
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b' ' { b'\n' } else { b' ' };
    std::fs::write(&edited, bytes).expect("the edited migration");

    let departures = departures_from(SQLITE, copy.path()).await;

    assert_eq!(departures.len(), 1, "{departures:?}");
    assert!(departures[0].starts_with("migration 5 (fold queue) was edited"));
    assert!(departures[0].contains("never edit a committed migration"));
    assert!(departures[0].contains("add a new migration"));
}

#[tokio::test]
async fn a_migration_not_pinned_yet_or_removed_is_a_departure() {
    let copy = copy_of_sqlite_migrations();
    std::fs::write(
        copy.path().join("0099_new_index.sql"),
        "CREATE INDEX x ON events (seq);\n",
    )
    .expect("a new migration");
    std::fs::remove_file(copy.path().join("0007_quarantine_index.sql")).expect("a removal");

    let departures = departures_from(SQLITE, copy.path()).await;

    assert_eq!(departures.len(), 2, "{departures:?}");
    assert!(departures[0].starts_with("migration 99 (new index) is not pinned"));
    assert!(departures[0].contains("add (99, \"new index\", \""));
    assert!(departures[1].starts_with("migration 7 (quarantine index) was removed"));
}

/// Applies the migrations in `folder` to `pool`.
async fn migrate(pool: &sqlx::SqlitePool, folder: &Path) {
    let migrator = Migrator::new(folder).await.expect("migrations");
    migrator.run(pool).await.expect("migrated");
}

/// One row of the fold queue: (call key, version, marked at, claim token, claimed until).
type QueueRow = (String, i64, i64, Option<i64>, Option<i64>);

#[tokio::test]
async fn the_fold_queue_keeps_every_mark_and_claim_when_it_moves_to_call_order() {
    let before_the_move = copy_of_sqlite_migrations();
    // The migration that moves the queue, and those after it.
    for file in std::fs::read_dir(before_the_move.path()).expect("the copy") {
        let path = file.expect("a migration").path();
        if path.file_name().is_some_and(|name| name >= "0016") {
            std::fs::remove_file(path).expect("a removal");
        }
    }
    let folder = tempfile::tempdir().expect("a temporary folder");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(folder.path().join("callfold.db"))
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("a database");
    migrate(&pool, before_the_move.path()).await;
    let queue: Vec<QueueRow> = vec![
        ("cll_a".into(), 1, 100, None, None),
        ("cll_b".into(), 3, 200, Some(77), Some(9_000)),
        ("cll_c".into(), 2, 50, Some(-5), Some(10)),
    ];
    for (call_key, version, marked_at, token, until) in queue.iter().rev() {
        sqlx::query(
            "INSERT INTO calls_to_fold \
             (call_key, version, marked_at_us, claim_token, claimed_until_us) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(call_key)
        .bind(version)
        .bind(marked_at)
        .bind(token)
        .bind(until)
        .execute(&pool)
        .await
        .expect("a mark");
    }

    migrate(&pool, &committed("sqlite")).await;

    let moved: Vec<QueueRow> = sqlx::query_as(
        "SELECT call_key, version, marked_at_us, claim_token, claimed_until_us \
         FROM calls_to_fold ORDER BY call_key",
    )
    .fetch_all(&pool)
    .await
    .expect("the queue");
    assert_eq!(moved, queue);
    let oldest: String =
        sqlx::query_scalar("SELECT call_key FROM calls_to_fold ORDER BY marked_at_us LIMIT 1")
            .fetch_one(&pool)
            .await
            .expect("the oldest mark");
    assert_eq!(oldest, "cll_c");
}

//! Migrations apply to an empty database and to an existing one; a database from a newer wharf
//! and a file that is not a database are refused with their path named.

use std::str::FromStr;

use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use wharf::api::SystemInfo;
use wharf::db::Db;

use crate::harness::{self, TestDaemon};

/// The migrations in the source tree, by version.
fn migration_versions() -> Vec<i64> {
    let mut versions: Vec<i64> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .map(|n| n.split('_').next().unwrap().parse().unwrap())
            .collect();
    versions.sort();
    versions
}

#[tokio::test]
async fn an_empty_database_gets_every_migration_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.db");
    let db = Db::open(&path).await.unwrap();
    assert_eq!(db.applied_migrations().await.unwrap(), migration_versions());
    db.close().await;

    let mut conn = SqliteConnectOptions::from_str("sqlite://")
        .unwrap()
        .filename(&path)
        .connect()
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    for table in ["events", "settings"] {
        assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
    }
}

#[tokio::test]
async fn an_existing_database_keeps_its_records_across_restarts() {
    if harness::skip_unless_root("an_existing_database_keeps_its_records_across_restarts") {
        return;
    }
    let mut first = TestDaemon::start();
    let before: SystemInfo = first
        .unix_client()
        .get_json("/api/v1/system/info")
        .await
        .unwrap();
    first.stop().unwrap();

    // Same data root, a new daemon: migrations are already applied, records and id are kept.
    let config = harness::test_config(first.dir.path());
    let second = TestDaemon::start_in(tempfile::tempdir().unwrap(), config).unwrap();
    let after: SystemInfo = second
        .unix_client()
        .get_json("/api/v1/system/info")
        .await
        .unwrap();
    assert_eq!(after.id, before.id, "daemon id survives a restart");
    assert_eq!(after.counts.events, 3, "start, stop, start");

    let db = Db::open(&second.data_root.join("wharf.db")).await.unwrap();
    assert_eq!(
        db.applied_migrations().await.unwrap(),
        migration_versions(),
        "nothing applied twice"
    );
    let actions: Vec<String> = db
        .recent_events(10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["start", "stop", "start"]);
}

#[tokio::test]
async fn a_database_from_a_newer_wharf_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.db");
    Db::open(&path).await.unwrap().close().await;
    let mut conn = SqliteConnectOptions::from_str("sqlite://")
        .unwrap()
        .filename(&path)
        .connect()
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99991231000000, 'from the future', 1, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);

    let err = Db::open(&path).await.unwrap_err().to_string();
    assert!(
        err.contains(&path.display().to_string())
            && err.contains("newer wharf")
            && err.contains("99991231000000"),
        "{err}"
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.db");
    let junk = b"this is not an SQLite database, and it must not be overwritten\n".repeat(100);
    std::fs::write(&path, &junk).unwrap();
    let err = Db::open(&path).await.unwrap_err().to_string();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("not a database"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), junk, "the file is untouched");
}

//! What may run the migrations: the database's level against this binary's.
//!
//! sqlx applies the migrations this binary embeds that the database lacks
//! (an upgrade). A database that holds a migration this binary does not know
//! was written by a newer release (a downgrade), or by another build: its
//! schema is not one this binary's queries were written for, so the server
//! refuses to start with a message that says so and what to do, instead of
//! sqlx's "migration N was previously applied but is missing" (see
//! docs/upgrading.md).

use super::{Result, StoreError};
use sqlx::migrate::Migrator;
use sqlx::SqlitePool;

/// Refuses a database that holds a migration `migrator` does not know. A
/// fresh database (no migrations table yet) passes.
pub(super) async fn check_level(pool: &SqlitePool, migrator: &Migrator, db: &str) -> Result<()> {
    let table: Option<String> = sqlx::query_scalar(
        "SELECT name FROM main.sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(pool)
    .await?;
    if table.is_none() {
        return Ok(());
    }
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await?;
    let known_max = migrator.iter().map(|m| m.version).max().unwrap_or_default();
    let unknown: Vec<&(i64, String)> = applied
        .iter()
        .filter(|(v, _)| !migrator.iter().any(|m| m.version == *v))
        .collect();
    let Some(&&(version, ref description)) = unknown.last() else {
        return Ok(());
    };
    let binary = env!("CARGO_PKG_VERSION");
    let message = if version > known_max {
        format!(
            "the database {db} is at migration {version} ({description}), newer than this \
             metrolog-server {binary}, which knows migrations up to {known_max}: a newer release \
             upgraded it. Downgrading is not supported; run that release again, or restore the \
             backup taken before the upgrade (docs/upgrading.md). The database was not changed."
        )
    } else {
        format!(
            "the database {db} holds migration {version} ({description}), which this \
             metrolog-server {binary} does not have: it was written by another build. Run the \
             build that wrote it, or restore a backup taken by this release (docs/upgrading.md). \
             The database was not changed."
        )
    };
    Err(StoreError::Invalid(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    async fn pool(dir: &tempfile::TempDir) -> SqlitePool {
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::from_str(&url)
                .unwrap()
                .create_if_missing(true),
        )
        .await
        .unwrap()
    }

    /// Records a migration this build does not have and returns the refusal.
    async fn refusal(
        pool: &SqlitePool,
        migrator: &Migrator,
        version: i64,
        description: &str,
    ) -> String {
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (?, ?, 1, x'00', 0)",
        )
        .bind(version)
        .bind(description)
        .execute(pool)
        .await
        .unwrap();
        check_level(pool, migrator, "m.db")
            .await
            .unwrap_err()
            .to_string()
    }

    #[tokio::test]
    async fn a_fresh_or_older_database_passes_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir).await;
        let migrator = &super::super::MIGRATOR;
        check_level(&pool, migrator, "m.db").await.unwrap();
        let older = Migrator {
            migrations: std::borrow::Cow::Owned(
                migrator
                    .iter()
                    .filter(|m| m.version <= 5)
                    .cloned()
                    .collect(),
            ),
            ..Migrator::DEFAULT
        };
        older.run(&pool).await.unwrap();
        check_level(&pool, migrator, "m.db").await.unwrap();
        migrator.run(&pool).await.unwrap();
        check_level(&pool, migrator, "m.db").await.unwrap();

        let err = refusal(&pool, migrator, 9999, "from the future").await;
        assert!(
            err.contains("at migration 9999 (from the future), newer than this metrolog-server")
                && err.contains("Downgrading is not supported"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_migration_of_another_build_below_the_newest_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir).await;
        let migrator = &super::super::MIGRATOR;
        migrator.run(&pool).await.unwrap();
        // A number inside the known range that this build lacks.
        let err = refusal(&pool, migrator, 6, "experiment").await;
        assert!(
            err.contains("holds migration 6 (experiment)") && err.contains("another build"),
            "{err}"
        );
    }
}

//! Containers: one row each, with what the API lists and inspects.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Db, DbError, now_secs, sql};

/// A container as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct ContainerRow {
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_digest: String,
    /// JSON of the container's configuration.
    pub config: String,
    /// created, running or exited.
    pub state: String,
    pub pid: Option<i64>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Restarts made by the restart policy since the container was last started by a user.
    pub restart_count: i64,
    /// Whether a user stopped it (so `unless-stopped` leaves it down).
    pub stopped_by_user: bool,
    /// JSON of its health, when it has a healthcheck.
    pub health: Option<String>,
}

/// A unique-name violation as a conflict that names the name; other failures as they are.
fn name_taken<'a>(name: &'a str, action: &'static str) -> impl FnOnce(sqlx::Error) -> DbError + 'a {
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => DbError::Conflict {
            what: format!("the container name {name:?} is already in use"),
        },
        _ => DbError::Sql { action, source: e },
    }
}

const COLUMNS: &str = "id, name, image, image_digest, config, state, pid, exit_code, error, \
                       created_at, started_at, finished_at, restart_count, stopped_by_user, \
                       health";

impl Db {
    pub async fn insert_container(
        &self,
        id: &str,
        name: &str,
        image: &str,
        image_digest: &str,
        config: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO containers (id, name, image, image_digest, config, state, created_at) \
             VALUES (?, ?, ?, ?, ?, 'created', ?)",
        )
        .bind(id)
        .bind(name)
        .bind(image)
        .bind(image_digest)
        .bind(config)
        .bind(now_secs())
        .execute(&self.pool)
        .await
        .map_err(name_taken(name, "recording a container"))?;
        Ok(())
    }

    /// The container `key` names: its id, a unique id prefix, or its name.
    pub async fn find_container(&self, key: &str) -> Result<Option<ContainerRow>, DbError> {
        let by_name: Option<ContainerRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM containers WHERE name = ?1 OR id = ?1"
        )))
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql("looking up a container"))?;
        if by_name.is_some() || key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(by_name);
        }
        let mut by_prefix: Vec<ContainerRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM containers WHERE substr(id, 1, length(?1)) = ?1 LIMIT 2"
        )))
        .bind(key.to_ascii_lowercase())
        .fetch_all(&self.pool)
        .await
        .map_err(sql("looking up a container"))?;
        match by_prefix.len() {
            1 => Ok(by_prefix.pop()),
            0 => Ok(None),
            _ => Err(DbError::Conflict {
                what: format!("the id prefix {key:?} names more than one container"),
            }),
        }
    }

    pub async fn list_containers(&self, all: bool) -> Result<Vec<ContainerRow>, DbError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM containers WHERE ?1 OR state IN ('running', 'paused') ORDER BY created_at DESC, id"
        )))
        .bind(all)
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing containers"))
    }

    /// Replaces a container's recorded configuration (its JSON).
    pub async fn set_container_config(&self, id: &str, config: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE containers SET config = ? WHERE id = ?")
            .bind(config)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(sql("recording a container's configuration"))?;
        Ok(())
    }

    pub async fn container_started(&self, id: &str, pid: i64) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE containers SET state = 'running', pid = ?, started_at = ?, exit_code = NULL, \
             error = NULL, finished_at = NULL WHERE id = ?",
        )
        .bind(pid)
        .bind(now_secs())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(sql("recording a start"))?;
        Ok(())
    }

    /// Records a container's health (`None`: it has no healthcheck).
    pub async fn set_container_health(
        &self,
        id: &str,
        health: Option<&str>,
    ) -> Result<(), DbError> {
        sqlx::query("UPDATE containers SET health = ? WHERE id = ?")
            .bind(health)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(sql("recording a container's health"))?;
        Ok(())
    }

    pub async fn container_exited(
        &self,
        id: &str,
        exit_code: i64,
        error: Option<&str>,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE containers SET state = 'exited', pid = NULL, exit_code = ?, error = ?, finished_at = ? WHERE id = ?",
        )
        .bind(exit_code)
        .bind(error)
        .bind(now_secs())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(sql("recording an exit"))?;
        Ok(())
    }

    /// Counts a restart by the policy (`restarted`) or resets the count (a user's start), and
    /// clears or sets the stopped-by-user mark.
    pub async fn container_restarts(
        &self,
        id: &str,
        restarted: bool,
        stopped_by_user: bool,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE containers SET restart_count = CASE WHEN ?1 THEN restart_count + 1 ELSE 0 END, \
             stopped_by_user = ?2 WHERE id = ?3",
        )
        .bind(restarted)
        .bind(stopped_by_user)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(sql("recording a restart"))?;
        Ok(())
    }

    /// Only the stopped-by-user mark.
    pub async fn container_stopped_by_user(&self, id: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE containers SET stopped_by_user = 1 WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(sql("recording a stop"))?;
        Ok(())
    }

    /// Between running and paused.
    pub async fn container_paused(&self, id: &str, paused: bool) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE containers SET state = CASE WHEN ?1 THEN 'paused' ELSE 'running' END \
             WHERE id = ?2 AND state IN ('running', 'paused')",
        )
        .bind(paused)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(sql("recording a pause"))?;
        Ok(())
    }

    /// Gives a container another name.
    pub async fn rename_container(&self, id: &str, name: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE containers SET name = ? WHERE id = ?")
            .bind(name)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(name_taken(name, "renaming a container"))?;
        Ok(())
    }

    pub async fn delete_container(&self, id: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM containers WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(sql("removing a container"))?;
        Ok(())
    }

    /// Names of the containers created from a manifest.
    pub async fn containers_of_image(&self, digest: &str) -> Result<Vec<String>, DbError> {
        sqlx::query_scalar("SELECT name FROM containers WHERE image_digest = ? ORDER BY name")
            .bind(digest)
            .fetch_all(&self.pool)
            .await
            .map_err(sql("listing an image's containers"))
    }
}

//! Users, robots, repository grants, sessions and API tokens.
//!
//! Every change that the audit log must show takes the audit record and writes it in the same
//! transaction as the change, so there is never a change without its entry or an entry without
//! its change.

use serde::Serialize;
use sqlx::{Sqlite, Transaction};
use utoipa::ToSchema;

use super::audit::{AuditRecord, insert_audit};
use super::{Db, DbError, now_secs, sql};
use crate::domain::{RepoPattern, Role};

/// A user or a robot, without its password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub kind: AccountKind,
    /// `None` for robots.
    pub role: Option<Role>,
    pub created_at: i64,
    pub password_changed_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    User,
    Robot,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::Robot => "robot",
        }
    }
}

/// A user's row with the password hash, for sign-in only.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

/// Registry rights on the repositories a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RepositoryGrant {
    #[schema(value_type = String)]
    pub pattern: RepoPattern,
    pub pull: bool,
    pub push: bool,
    pub delete: bool,
}

/// A dashboard session, looked up by the digest of its cookie.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf_token: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

/// An API token's metadata; the token itself is never stored.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ApiToken {
    pub id: i64,
    pub user_id: i64,
    pub user: String,
    pub name: String,
    /// The first characters of the token, to recognise it in listings.
    pub prefix: String,
    pub role: Role,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

type UserRow = (i64, String, String, Option<String>, i64, i64);
/// A user row and its password hash.
type CredentialsRow = (i64, String, String, Option<String>, i64, i64, String);
/// A user row, then the session's CSRF token, creation and last-seen times.
type SessionRow = (
    i64,
    String,
    String,
    Option<String>,
    i64,
    i64,
    String,
    i64,
    i64,
);
macro_rules! user_columns {
    () => {
        "id, name, kind, role, created_at, password_changed_at"
    };
}

fn user_from_row((id, name, kind, role, created_at, password_changed_at): UserRow) -> User {
    User {
        id,
        name,
        kind: if kind == "robot" {
            AccountKind::Robot
        } else {
            AccountKind::User
        },
        // The CHECK constraints keep role to the three names.
        role: role.and_then(|r| r.parse().ok()),
        created_at,
        password_changed_at,
    }
}

type TokenRow = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);
macro_rules! token_columns {
    () => {
        "t.id, t.user_id, u.name, t.name, t.prefix, t.role, t.created_at, t.expires_at, t.last_used_at, t.revoked_at"
    };
}

fn token_from_row(r: TokenRow) -> ApiToken {
    ApiToken {
        id: r.0,
        user_id: r.1,
        user: r.2,
        name: r.3,
        prefix: r.4,
        role: r.5.parse().unwrap_or(Role::Viewer),
        created_at: r.6,
        expires_at: r.7,
        last_used_at: r.8,
        revoked_at: r.9,
    }
}

/// A new API token to store.
pub struct NewToken<'a> {
    pub user_id: i64,
    pub name: &'a str,
    pub prefix: &'a str,
    pub digest: &'a str,
    pub role: Role,
    pub expires_at: Option<i64>,
}

impl Db {
    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, DbError> {
        self.pool
            .begin()
            .await
            .map_err(sql("starting a transaction"))
    }

    async fn commit(tx: Transaction<'static, Sqlite>) -> Result<(), DbError> {
        tx.commit().await.map_err(sql("committing a transaction"))
    }

    /// How many accounts of kind `user` exist (robots do not count: they cannot administer).
    pub async fn count_users(&self) -> Result<i64, DbError> {
        sqlx::query_scalar("SELECT count(*) FROM users WHERE kind = 'user'")
            .fetch_one(&self.pool)
            .await
            .map_err(sql("counting users"))
    }

    /// Creates a user (with a role) or a robot (without).
    pub async fn create_user(
        &self,
        name: &str,
        kind: AccountKind,
        role: Option<Role>,
        password_hash: &str,
        audit: &AuditRecord,
    ) -> Result<User, DbError> {
        let now = now_secs();
        let mut tx = self.begin().await?;
        let row: Result<UserRow, _> = sqlx::query_as(concat!(
            "INSERT INTO users (name, kind, role, password_hash, created_at, password_changed_at) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING ",
            user_columns!()
        ))
        .bind(name)
        .bind(kind.as_str())
        .bind(role.map(Role::as_str))
        .bind(password_hash)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await;
        let row = match row {
            Ok(row) => row,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(DbError::Conflict {
                    what: format!("user {name:?} already exists"),
                });
            }
            Err(e) => return Err(sql("creating a user")(e)),
        };
        insert_audit(&mut tx, audit).await?;
        Self::commit(tx).await?;
        Ok(user_from_row(row))
    }

    pub async fn user_by_name(&self, name: &str) -> Result<Option<User>, DbError> {
        let row: Option<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE name = ?"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql("looking up a user"))?;
        Ok(row.map(user_from_row))
    }

    /// The user and password hash for a sign-in attempt.
    pub async fn credentials(&self, name: &str) -> Result<Option<Credentials>, DbError> {
        let row: Option<CredentialsRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            ", password_hash FROM users WHERE name = ?"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql("looking up credentials"))?;
        Ok(row.map(|(id, name, kind, role, c, p, hash)| Credentials {
            user: user_from_row((id, name, kind, role, c, p)),
            password_hash: hash,
        }))
    }

    pub async fn list_users(&self) -> Result<Vec<User>, DbError> {
        let rows: Vec<UserRow> = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing users"))?;
        Ok(rows.into_iter().map(user_from_row).collect())
    }

    /// Removes a user with its grants, sessions and tokens.
    pub async fn delete_user(&self, name: &str, audit: &AuditRecord) -> Result<(), DbError> {
        let mut tx = self.begin().await?;
        let deleted = sqlx::query("DELETE FROM users WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(sql("deleting a user"))?;
        if deleted.rows_affected() == 0 {
            return Err(DbError::NotFound {
                what: format!("user {name:?}"),
            });
        }
        insert_audit(&mut tx, audit).await?;
        Self::commit(tx).await
    }

    /// Sets a new password and revokes every session of the user.
    pub async fn set_password(
        &self,
        user_id: i64,
        password_hash: &str,
        audit: &AuditRecord,
    ) -> Result<(), DbError> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?")
            .bind(password_hash)
            .bind(now_secs())
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(sql("changing a password"))?;
        sqlx::query("DELETE FROM sessions WHERE user_id = ?")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(sql("revoking sessions"))?;
        insert_audit(&mut tx, audit).await?;
        Self::commit(tx).await
    }

    /// Replaces the hash of an unchanged password (new hashing parameters); sessions stay.
    pub async fn rehash_password(&self, user_id: i64, password_hash: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(password_hash)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(sql("re-hashing a password"))?;
        Ok(())
    }

    pub async fn grants_of(&self, user_id: i64) -> Result<Vec<RepositoryGrant>, DbError> {
        let rows: Vec<(String, bool, bool, bool)> = sqlx::query_as(
            "SELECT pattern, can_pull, can_push, can_delete FROM repository_grants WHERE user_id = ? ORDER BY pattern",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing repository grants"))?;
        Ok(rows
            .into_iter()
            .filter_map(|(pattern, pull, push, delete)| {
                Some(RepositoryGrant {
                    pattern: RepoPattern::parse(&pattern).ok()?,
                    pull,
                    push,
                    delete,
                })
            })
            .collect())
    }

    /// Replaces all repository grants of a user or robot.
    pub async fn set_grants(
        &self,
        user_id: i64,
        grants: &[RepositoryGrant],
        audit: &AuditRecord,
    ) -> Result<(), DbError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM repository_grants WHERE user_id = ?")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(sql("replacing repository grants"))?;
        for g in grants {
            sqlx::query(
                "INSERT INTO repository_grants (user_id, pattern, can_pull, can_push, can_delete) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (user_id, pattern) DO UPDATE SET can_pull = excluded.can_pull, \
                 can_push = excluded.can_push, can_delete = excluded.can_delete",
            )
            .bind(user_id)
            .bind(g.pattern.as_str())
            .bind(g.pull)
            .bind(g.push)
            .bind(g.delete)
            .execute(&mut *tx)
            .await
            .map_err(sql("storing a repository grant"))?;
        }
        insert_audit(&mut tx, audit).await?;
        Self::commit(tx).await
    }

    /// Stores a new session (the login's audit entry in the same transaction).
    pub async fn create_session(
        &self,
        id_digest: &str,
        user_id: i64,
        csrf_token: &str,
        source: &str,
        audit: &AuditRecord,
    ) -> Result<(), DbError> {
        let now = now_secs();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id_digest, user_id, csrf_token, created_at, last_seen_at, source) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(id_digest)
        .bind(user_id)
        .bind(csrf_token)
        .bind(now)
        .bind(now)
        .bind(source)
        .execute(&mut *tx)
        .await
        .map_err(sql("creating a session"))?;
        insert_audit(&mut tx, audit).await?;
        Self::commit(tx).await
    }

    pub async fn session(&self, id_digest: &str) -> Result<Option<Session>, DbError> {
        let row: Option<SessionRow> = sqlx::query_as(
            "SELECT u.id, u.name, u.kind, u.role, u.created_at, u.password_changed_at, s.csrf_token, s.created_at, s.last_seen_at \
             FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_digest = ?",
        )
        .bind(id_digest)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql("looking up a session"))?;
        Ok(row.map(
            |(id, name, kind, role, c, p, csrf_token, created_at, last_seen_at)| Session {
                user: user_from_row((id, name, kind, role, c, p)),
                csrf_token,
                created_at,
                last_seen_at,
            },
        ))
    }

    pub async fn touch_session(&self, id_digest: &str) -> Result<(), DbError> {
        sqlx::query("UPDATE sessions SET last_seen_at = ? WHERE id_digest = ?")
            .bind(now_secs())
            .bind(id_digest)
            .execute(&self.pool)
            .await
            .map_err(sql("refreshing a session"))?;
        Ok(())
    }

    /// Ends a session; with an audit record (logout) or without (expiry).
    pub async fn delete_session(
        &self,
        id_digest: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<(), DbError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE id_digest = ?")
            .bind(id_digest)
            .execute(&mut *tx)
            .await
            .map_err(sql("ending a session"))?;
        if let Some(audit) = audit {
            insert_audit(&mut tx, audit).await?;
        }
        Self::commit(tx).await
    }

    pub async fn create_token(
        &self,
        token: &NewToken<'_>,
        audit: &AuditRecord,
    ) -> Result<ApiToken, DbError> {
        let mut tx = self.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO api_tokens (user_id, name, prefix, digest, role, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(token.user_id)
        .bind(token.name)
        .bind(token.prefix)
        .bind(token.digest)
        .bind(token.role.as_str())
        .bind(now_secs())
        .bind(token.expires_at)
        .fetch_one(&mut *tx)
        .await
        .map_err(sql("creating an API token"))?;
        insert_audit(&mut tx, audit).await?;
        let row: TokenRow = sqlx::query_as(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?"
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(sql("reading an API token"))?;
        Self::commit(tx).await?;
        Ok(token_from_row(row))
    }

    /// The token with this digest and its owner, whatever its state (the caller checks expiry and revocation).
    pub async fn token_by_digest(&self, digest: &str) -> Result<Option<(ApiToken, User)>, DbError> {
        let row: Option<TokenRow> = sqlx::query_as(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.digest = ?"
        ))
        .bind(digest)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql("looking up an API token"))?;
        let Some(row) = row else { return Ok(None) };
        let token = token_from_row(row);
        let owner: UserRow = sqlx::query_as(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = ?"
        ))
        .bind(token.user_id)
        .fetch_one(&self.pool)
        .await
        .map_err(sql("looking up a token's owner"))?;
        Ok(Some((token, user_from_row(owner))))
    }

    /// Records a use of the token (at most one write a minute per token).
    pub async fn touch_token(&self, id: i64) -> Result<(), DbError> {
        let now = now_secs();
        sqlx::query("UPDATE api_tokens SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)")
            .bind(now)
            .bind(id)
            .bind(now - 60)
            .execute(&self.pool)
            .await
            .map_err(sql("recording a token's use"))?;
        Ok(())
    }

    /// Tokens of one user, or of everyone with `None`; newest first.
    pub async fn list_tokens(&self, user_id: Option<i64>) -> Result<Vec<ApiToken>, DbError> {
        let rows: Vec<TokenRow> = sqlx::query_as(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE ?1 IS NULL OR t.user_id = ?1 ORDER BY t.id DESC"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing API tokens"))?;
        Ok(rows.into_iter().map(token_from_row).collect())
    }

    pub async fn token_by_id(&self, id: i64) -> Result<Option<ApiToken>, DbError> {
        let row: Option<TokenRow> = sqlx::query_as(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql("looking up an API token"))?;
        Ok(row.map(token_from_row))
    }

    /// Revokes a token (idempotent: revoking a revoked token keeps the first time).
    pub async fn revoke_token(&self, id: i64, audit: &AuditRecord) -> Result<(), DbError> {
        let mut tx = self.begin().await?;
        let done =
            sqlx::query("UPDATE api_tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?")
                .bind(now_secs())
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(sql("revoking an API token"))?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound {
                what: format!("API token {id}"),
            });
        }
        insert_audit(&mut tx, audit).await?;
        Self::commit(tx).await
    }
}

//! The registry's rows: which manifests and blobs each repository holds, what manifests point
//! at, tags (shared with local images), and per-repository settings.

use super::{Db, DbError, NewImage, now_secs, sql};

/// A manifest as a repository holds it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RepoManifest {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
}

/// One entry of the referrers API.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Referrer {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

/// What a pushed manifest points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    Blob,
    Manifest,
}

impl RefKind {
    fn as_str(self) -> &'static str {
        match self {
            RefKind::Blob => "blob",
            RefKind::Manifest => "manifest",
        }
    }
}

/// A manifest put into a repository, with everything recorded in the same transaction.
#[derive(Debug, Clone)]
pub struct NewRepoManifest {
    pub repository: String,
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    pub artifact_type: Option<String>,
    pub subject: Option<String>,
    /// A JSON object.
    pub annotations: Option<String>,
    pub references: Vec<(String, RefKind)>,
    pub tag: Option<String>,
    /// Set when the manifest is a runnable image of a known platform: it becomes a local image.
    pub image: Option<NewImage>,
}

impl Db {
    /// Records a pushed manifest: the repository holds it (and the blobs it uses), the tag moves
    /// to it, and a runnable image becomes a local image, all in one transaction.
    pub async fn put_manifest(&self, m: &NewRepoManifest) -> Result<(), DbError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(sql("starting a transaction"))?;
        let now = now_secs();
        sqlx::query(
            "INSERT INTO repository_manifests (repository, digest, media_type, size, artifact_type, subject, annotations, pushed_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (repository, digest) DO UPDATE SET pushed_at = excluded.pushed_at",
        )
        .bind(&m.repository)
        .bind(&m.digest)
        .bind(&m.media_type)
        .bind(m.size)
        .bind(&m.artifact_type)
        .bind(&m.subject)
        .bind(&m.annotations)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(sql("recording a pushed manifest"))?;
        for (target, kind) in &m.references {
            sqlx::query(
                "INSERT OR IGNORE INTO manifest_references (manifest_digest, target, kind) VALUES (?, ?, ?)",
            )
            .bind(&m.digest)
            .bind(target)
            .bind(kind.as_str())
            .execute(&mut *tx)
            .await
            .map_err(sql("recording what a manifest references"))?;
            if *kind == RefKind::Blob {
                sqlx::query(
                    "INSERT OR IGNORE INTO repository_blobs (repository, digest) VALUES (?, ?)",
                )
                .bind(&m.repository)
                .bind(target)
                .execute(&mut *tx)
                .await
                .map_err(sql("linking a blob"))?;
            }
        }
        if let Some(tag) = &m.tag {
            super::images::set_tag(&mut tx, &m.repository, tag, &m.digest, now).await?;
        }
        if let Some(image) = &m.image {
            super::images::insert_image(&mut tx, image, now).await?;
        }
        tx.commit()
            .await
            .map_err(sql("committing a pushed manifest"))
    }

    /// The manifest `reference` (a tag or a digest) names in `repository`.
    pub async fn resolve_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<RepoManifest>, DbError> {
        let query = if reference.contains(':') {
            "SELECT digest, media_type, size FROM repository_manifests WHERE repository = ?1 AND digest = ?2"
        } else {
            "SELECT m.digest, m.media_type, m.size FROM image_tags t JOIN repository_manifests m \
             ON m.repository = t.repository AND m.digest = t.manifest_digest WHERE t.repository = ?1 AND t.tag = ?2"
        };
        sqlx::query_as::<_, RepoManifest>(query)
            .bind(repository)
            .bind(reference)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql("looking up a manifest"))
    }

    /// Whether `repository` holds the manifest `digest`.
    pub async fn holds_manifest(&self, repository: &str, digest: &str) -> Result<bool, DbError> {
        Ok(self.resolve_manifest(repository, digest).await?.is_some())
    }

    /// Lets `repository` serve the blob (after an upload or a mount into it); an existing link
    /// is made new again.
    pub async fn link_blob(&self, repository: &str, digest: &str) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO repository_blobs (repository, digest, linked_at) VALUES (?, ?, ?) \
             ON CONFLICT (repository, digest) DO UPDATE SET linked_at = excluded.linked_at",
        )
        .bind(repository)
        .bind(digest)
        .bind(now_secs())
        .execute(&self.pool)
        .await
        .map_err(sql("linking a blob"))?;
        Ok(())
    }

    /// Marks an existing link as just used: a client that asked whether the repository has the
    /// blob (and so will not upload it) is about to push a manifest that needs it.
    pub async fn touch_blob_link(&self, repository: &str, digest: &str) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE repository_blobs SET linked_at = ? WHERE repository = ? AND digest = ?",
        )
        .bind(now_secs())
        .bind(repository)
        .bind(digest)
        .execute(&self.pool)
        .await
        .map_err(sql("touching a blob link"))?;
        Ok(())
    }

    pub async fn blob_linked(&self, repository: &str, digest: &str) -> Result<bool, DbError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM repository_blobs WHERE repository = ? AND digest = ?",
        )
        .bind(repository)
        .bind(digest)
        .fetch_one(&self.pool)
        .await
        .map_err(sql("checking a blob link"))?;
        Ok(n > 0)
    }

    /// Stops `repository` serving the blob; true if it did.
    pub async fn unlink_blob(&self, repository: &str, digest: &str) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM repository_blobs WHERE repository = ? AND digest = ?")
            .bind(repository)
            .bind(digest)
            .execute(&self.pool)
            .await
            .map_err(sql("unlinking a blob"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Whether the repository holds anything (a manifest, a blob or a tag).
    pub async fn repository_exists(&self, repository: &str) -> Result<bool, DbError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM repository_manifests WHERE repository = ?1) + \
             (SELECT count(*) FROM repository_blobs WHERE repository = ?1) + \
             (SELECT count(*) FROM image_tags WHERE repository = ?1)",
        )
        .bind(repository)
        .fetch_one(&self.pool)
        .await
        .map_err(sql("looking up a repository"))?;
        Ok(n > 0)
    }

    /// The repository's tags in lexical order, at most `n` after `last`.
    pub async fn list_tags(
        &self,
        repository: &str,
        n: Option<i64>,
        last: Option<&str>,
    ) -> Result<Vec<String>, DbError> {
        sqlx::query_scalar(
            "SELECT tag FROM image_tags WHERE repository = ?1 AND tag > ?2 ORDER BY tag LIMIT ?3",
        )
        .bind(repository)
        .bind(last.unwrap_or(""))
        .bind(n.unwrap_or(-1))
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing tags"))
    }

    /// Repository names in lexical order, at most `n` after `last`.
    pub async fn catalog(
        &self,
        n: Option<i64>,
        last: Option<&str>,
    ) -> Result<Vec<String>, DbError> {
        sqlx::query_scalar(
            "SELECT name FROM (SELECT repository AS name FROM repository_manifests \
             UNION SELECT repository FROM image_tags UNION SELECT repository FROM repository_blobs) \
             WHERE name > ?1 ORDER BY name LIMIT ?2",
        )
        .bind(last.unwrap_or(""))
        .bind(n.unwrap_or(-1))
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing repositories"))
    }

    /// Removes a tag; true if it existed.
    pub async fn delete_tag(&self, repository: &str, tag: &str) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM image_tags WHERE repository = ? AND tag = ?")
            .bind(repository)
            .bind(tag)
            .execute(&self.pool)
            .await
            .map_err(sql("removing a tag"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes a manifest from a repository with the repository's tags that name it. When no
    /// repository holds it any more, what it references is released and a local image of it
    /// goes too. True if the repository held it.
    pub async fn delete_manifest(&self, repository: &str, digest: &str) -> Result<bool, DbError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(sql("starting a transaction"))?;
        let holders: Vec<String> =
            sqlx::query_scalar("SELECT repository FROM repository_manifests WHERE digest = ?")
                .bind(digest)
                .fetch_all(&mut *tx)
                .await
                .map_err(sql("listing a manifest's repositories"))?;
        if !holders.iter().any(|r| r == repository) {
            return Ok(false);
        }
        if holders.len() == 1 {
            // The last holder: the manifest goes whole, while its repository still names it
            // (so the blobs only it gave the repository are released there).
            forget_manifest(&mut tx, digest).await?;
        } else {
            for (query, what) in [
                (
                    "DELETE FROM repository_manifests WHERE repository = ? AND digest = ?",
                    "removing a manifest",
                ),
                (
                    "DELETE FROM image_tags WHERE repository = ? AND manifest_digest = ?",
                    "removing a manifest's tags",
                ),
            ] {
                sqlx::query(query)
                    .bind(repository)
                    .bind(digest)
                    .execute(&mut *tx)
                    .await
                    .map_err(sql(what))?;
            }
        }
        sqlx::query("DELETE FROM repository_pulls WHERE repository = ? AND digest = ?")
            .bind(repository)
            .bind(digest)
            .execute(&mut *tx)
            .await
            .map_err(sql("forgetting a manifest's pulls"))?;
        tx.commit().await.map_err(sql("committing"))?;
        Ok(true)
    }

    /// The manifests in `repository` whose subject is `subject`, optionally of one artifact type.
    pub async fn referrers(
        &self,
        repository: &str,
        subject: &str,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>, DbError> {
        sqlx::query_as::<_, Referrer>(
            "SELECT digest, media_type, size, artifact_type, annotations FROM repository_manifests \
             WHERE repository = ?1 AND subject = ?2 AND (?3 IS NULL OR artifact_type = ?3) ORDER BY digest",
        )
        .bind(repository)
        .bind(subject)
        .bind(artifact_type)
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing referrers"))
    }

    /// Whether anyone may pull `repository` without credentials.
    pub async fn anonymous_pull(&self, repository: &str) -> Result<bool, DbError> {
        let on: Option<i64> =
            sqlx::query_scalar("SELECT anonymous_pull FROM repositories WHERE name = ?")
                .bind(repository)
                .fetch_optional(&self.pool)
                .await
                .map_err(sql("reading repository settings"))?;
        Ok(on == Some(1))
    }

    pub async fn set_anonymous_pull(&self, repository: &str, on: bool) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO repositories (name, anonymous_pull, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET anonymous_pull = excluded.anonymous_pull",
        )
        .bind(repository)
        .bind(on as i64)
        .bind(now_secs())
        .execute(&self.pool)
        .await
        .map_err(sql("writing repository settings"))?;
        Ok(())
    }
}

/// Drops every row about a manifest no repository or name holds any more.
/// A blob link younger than this is never dropped with a manifest: a push may be about to
/// use it (collection drops it later, by the same measure).
pub const LINK_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

pub(super) async fn forget_manifest(
    tx: &mut sqlx::SqliteConnection,
    digest: &str,
) -> Result<(), DbError> {
    // The repositories that held this manifest stop holding the blobs only it gave them,
    // unless a link is recent: a push in progress may have uploaded, mounted or asked for it.
    sqlx::query(
        "DELETE FROM repository_blobs WHERE digest IN \
         (SELECT target FROM manifest_references WHERE manifest_digest = ?1 AND kind = 'blob') \
         AND repository IN (SELECT repository FROM repository_manifests WHERE digest = ?1) \
         AND linked_at < ?2 \
         AND NOT EXISTS (SELECT 1 FROM repository_manifests rm JOIN manifest_references r \
         ON r.manifest_digest = rm.digest WHERE rm.repository = repository_blobs.repository \
         AND r.target = repository_blobs.digest AND rm.digest != ?1)",
    )
    .bind(digest)
    .bind(now_secs() - LINK_GRACE.as_secs() as i64)
    .execute(&mut *tx)
    .await
    .map_err(sql("releasing a manifest's blobs"))?;
    for (query, what) in [
        (
            "DELETE FROM image_tags WHERE manifest_digest = ?",
            "removing a manifest's names",
        ),
        (
            "DELETE FROM repository_manifests WHERE digest = ?",
            "removing a manifest from repositories",
        ),
        (
            "DELETE FROM manifest_references WHERE manifest_digest = ?",
            "releasing what a manifest references",
        ),
        (
            "DELETE FROM manifests WHERE digest = ?",
            "removing an image",
        ),
        (
            "DELETE FROM repository_pulls WHERE digest = ?",
            "forgetting a manifest's pulls",
        ),
    ] {
        sqlx::query(query)
            .bind(digest)
            .execute(&mut *tx)
            .await
            .map_err(sql(what))?;
    }
    Ok(())
}

impl Db {
    /// Every digest a manifest or an image still needs: manifests held by a repository or an
    /// image and what they reference (not bare blob links: see [`Db::unreferenced_links`]).
    pub async fn live_digests(&self) -> Result<std::collections::HashSet<String>, DbError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT digest FROM repository_manifests UNION SELECT digest FROM manifests \
             UNION SELECT config_digest FROM manifests UNION SELECT blob_digest FROM manifest_layers \
             UNION SELECT target FROM manifest_references",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing live blobs"))?;
        Ok(rows.into_iter().collect())
    }

    /// Links of blobs no manifest of their repository references (pushed, never used), with
    /// when each was last made or asked for (unix seconds).
    pub async fn unreferenced_links(&self) -> Result<Vec<(String, String, i64)>, DbError> {
        sqlx::query_as(
            "SELECT b.repository, b.digest, b.linked_at FROM repository_blobs b WHERE NOT EXISTS \
             (SELECT 1 FROM repository_manifests rm JOIN manifest_references r ON r.manifest_digest = rm.digest \
             WHERE rm.repository = b.repository AND r.target = b.digest)",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing unused blob links"))
    }

    /// Chain ids of the unpacked layers images still use.
    pub async fn live_chains(&self) -> Result<std::collections::HashSet<String>, DbError> {
        let rows: Vec<String> = sqlx::query_scalar("SELECT DISTINCT chain_id FROM manifest_layers")
            .fetch_all(&self.pool)
            .await
            .map_err(sql("listing live layers"))?;
        Ok(rows.into_iter().collect())
    }
}

/// A repository as the registry pages list it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RepositorySummary {
    pub name: String,
    pub tags: i64,
    pub anonymous_pull: bool,
}

/// A tag with what it names.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
    sqlx::FromRow,
)]
pub struct TagDetail {
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    /// Bytes of the manifest and, for an image, of its config and layers.
    pub size: i64,
    /// Unix seconds when the tag last moved.
    pub updated_at: i64,
    /// Pulls of its manifest from this repository, and the last one's time.
    pub pulls: i64,
    pub last_pulled_at: Option<i64>,
}

impl Db {
    /// Every repository with its tag count and anonymous-pull setting, by name.
    pub async fn repositories(&self) -> Result<Vec<RepositorySummary>, DbError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT n.name, (SELECT count(*) FROM image_tags t WHERE t.repository = n.name), \
             coalesce((SELECT anonymous_pull FROM repositories r WHERE r.name = n.name), 0) \
             FROM (SELECT repository AS name FROM repository_manifests UNION SELECT repository FROM image_tags \
             UNION SELECT repository FROM repository_blobs) n ORDER BY n.name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing repositories"))?;
        Ok(rows
            .into_iter()
            .map(|(name, tags, anonymous)| RepositorySummary {
                name,
                tags,
                anonymous_pull: anonymous == 1,
            })
            .collect())
    }

    /// Why `digest` may not leave `repository` now, if anything: it is the image of
    /// containers (when no other repository holds it), or a manifest of the repository (an
    /// index) lists it.
    pub async fn manifest_in_use(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Option<String>, DbError> {
        let holders: i64 =
            sqlx::query_scalar("SELECT count(*) FROM repository_manifests WHERE digest = ?")
                .bind(digest)
                .fetch_one(&self.pool)
                .await
                .map_err(sql("counting a manifest's repositories"))?;
        if holders <= 1 {
            let users = self.containers_of_image(digest).await?;
            if !users.is_empty() {
                return Ok(Some(format!(
                    "manifest {digest} is the image of container(s) {}: remove them first",
                    users.join(", ")
                )));
            }
        }
        let index: Option<String> = sqlx::query_scalar(
            "SELECT r.manifest_digest FROM manifest_references r JOIN repository_manifests m \
             ON m.digest = r.manifest_digest WHERE m.repository = ? AND r.target = ? AND r.kind = 'manifest' LIMIT 1",
        )
        .bind(repository)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql("looking for an index that lists a manifest"))?;
        Ok(index.map(|i| {
            format!(
                "manifest {digest} is listed by the index {i} in {repository}: delete that first"
            )
        }))
    }

    /// How often `digest` was pulled from `repository`, and when last.
    pub async fn manifest_pulls(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<(i64, Option<i64>), DbError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT pulls, last_pulled_at FROM repository_pulls WHERE repository = ? AND digest = ?",
        )
        .bind(repository)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql("reading a manifest's pulls"))?;
        Ok(row.map_or((0, None), |(n, at)| (n, Some(at))))
    }

    /// Counts a pull of `digest` from `repository`.
    pub async fn count_pull(&self, repository: &str, digest: &str) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO repository_pulls (repository, digest, pulls, last_pulled_at) VALUES (?1, ?2, 1, ?3) \
             ON CONFLICT (repository, digest) DO UPDATE SET pulls = pulls + 1, last_pulled_at = ?3",
        )
        .bind(repository)
        .bind(digest)
        .bind(now_secs())
        .execute(&self.pool)
        .await
        .map_err(sql("counting a pull"))?;
        Ok(())
    }

    /// The repository's tags with their manifests.
    pub async fn tag_details(&self, repository: &str) -> Result<Vec<TagDetail>, DbError> {
        sqlx::query_as::<_, TagDetail>(
            "SELECT t.tag, t.manifest_digest AS digest, m.media_type, \
             m.size + coalesce((SELECT sum(l.size) FROM manifest_layers l WHERE l.manifest_digest = t.manifest_digest), 0) AS size, \
             t.updated_at, coalesce(p.pulls, 0) AS pulls, p.last_pulled_at \
             FROM image_tags t JOIN repository_manifests m \
             ON m.repository = t.repository AND m.digest = t.manifest_digest \
             LEFT JOIN repository_pulls p ON p.repository = t.repository AND p.digest = t.manifest_digest \
             WHERE t.repository = ? ORDER BY t.tag",
        )
        .bind(repository)
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing tags"))
    }
}

//! Images: manifests, their layers and the tags that name them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Db, DbError, now_secs, sql};

/// A manifest to record, with its layers (bottom first).
#[derive(Debug, Clone)]
pub struct NewImage {
    pub digest: String,
    pub media_type: String,
    pub config_digest: String,
    pub size: i64,
    pub os: String,
    pub architecture: String,
    pub layers: Vec<LayerRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct LayerRecord {
    pub blob_digest: String,
    pub diff_id: String,
    pub chain_id: String,
    pub size: i64,
    pub media_type: String,
}

/// An image as listed: its manifest and every name pointing at it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageSummary {
    pub digest: String,
    pub config_digest: String,
    pub media_type: String,
    pub os: String,
    pub architecture: String,
    /// `repository:tag` names.
    pub tags: Vec<String>,
    /// Bytes of the layers as stored.
    pub size: i64,
    pub layers: i64,
    pub created_at: i64,
}

impl ImageSummary {
    /// `(repository, tag)` per name, or one `("<none>", "<none>")` for an unnamed image.
    pub fn names(&self) -> Vec<(String, String)> {
        if self.tags.is_empty() {
            return vec![("<none>".into(), "<none>".into())];
        }
        self.tags
            .iter()
            .map(|t| {
                let (r, tag) = t.rsplit_once(':').unwrap_or((t.as_str(), ""));
                (r.to_owned(), tag.to_owned())
            })
            .collect()
    }

    /// The first 12 hex digits of the manifest digest, as `docker images` shows IDs.
    pub fn short_id(&self) -> &str {
        let hex = self
            .digest
            .split_once(':')
            .map_or(self.digest.as_str(), |(_, h)| h);
        &hex[..hex.len().min(12)]
    }
}

type SummaryRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    i64,
);

fn summary(
    (digest, config_digest, media_type, os, architecture, tags, size, layers, created_at): SummaryRow,
) -> ImageSummary {
    let mut tags: Vec<String> = tags
        .map(|t| t.split('\n').map(str::to_owned).collect())
        .unwrap_or_default();
    tags.sort();
    ImageSummary {
        digest,
        config_digest,
        media_type,
        os,
        architecture,
        tags,
        size,
        layers,
        created_at,
    }
}

const SUMMARY: &str = "SELECT m.digest, m.config_digest, m.media_type, m.os, m.architecture, \
     (SELECT group_concat(t.repository || ':' || t.tag, char(10)) FROM image_tags t WHERE t.manifest_digest = m.digest), \
     (SELECT coalesce(sum(l.size), 0) FROM manifest_layers l WHERE l.manifest_digest = m.digest), \
     (SELECT count(*) FROM manifest_layers l WHERE l.manifest_digest = m.digest), m.created_at FROM manifests m";

impl Db {
    /// Records a manifest with its layers and points `tags` at it, in one transaction.
    pub async fn record_image(
        &self,
        image: &NewImage,
        tags: &[(String, String)],
    ) -> Result<(), DbError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(sql("starting a transaction"))?;
        let now = now_secs();
        insert_image(&mut tx, image, now).await?;
        for (repository, tag) in tags {
            set_tag(&mut tx, repository, tag, &image.digest, now).await?;
            hold_in_repository(&mut tx, repository, &image.digest, now).await?;
        }
        tx.commit().await.map_err(sql("committing an image"))
    }

    pub async fn list_images(&self) -> Result<Vec<ImageSummary>, DbError> {
        let rows: Vec<SummaryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{SUMMARY} ORDER BY m.created_at DESC"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing images"))?;
        Ok(rows.into_iter().map(summary).collect())
    }

    /// The image a tag names, or a manifest by digest.
    pub async fn find_image(
        &self,
        repository: &str,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> Result<Option<ImageSummary>, DbError> {
        let row: Option<SummaryRow> = match (digest, tag) {
            (Some(digest), _) => sqlx::query_as(sqlx::AssertSqlSafe(format!("{SUMMARY} WHERE m.digest = ?")))
                .bind(digest)
                .fetch_optional(&self.pool)
                .await,
            (None, Some(tag)) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{SUMMARY} WHERE m.digest = (SELECT manifest_digest FROM image_tags WHERE repository = ? AND tag = ?)"
            )))
            .bind(repository)
            .bind(tag)
            .fetch_optional(&self.pool)
            .await,
            (None, None) => Ok(None),
        }
        .map_err(sql("looking up an image"))?;
        Ok(row.map(summary))
    }

    pub async fn image_layers(&self, manifest_digest: &str) -> Result<Vec<LayerRecord>, DbError> {
        sqlx::query_as::<_, LayerRecord>(
            "SELECT blob_digest, diff_id, chain_id, size, media_type FROM manifest_layers WHERE manifest_digest = ? ORDER BY position",
        )
        .bind(manifest_digest)
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing an image's layers"))
    }
}

impl Db {
    /// Points `repository:tag` at an image (moving the tag if it named another).
    pub async fn tag_image(
        &self,
        manifest_digest: &str,
        repository: &str,
        tag: &str,
    ) -> Result<(), DbError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(sql("starting a transaction"))?;
        let now = now_secs();
        set_tag(&mut tx, repository, tag, manifest_digest, now).await?;
        hold_in_repository(&mut tx, repository, manifest_digest, now).await?;
        tx.commit().await.map_err(sql("committing a tag"))
    }

    /// Removes a name; when it was the image's last name (or `digest` names the image itself),
    /// the manifest and its layer rows go too. Returns the manifest removed, if one was.
    pub async fn untag_image(
        &self,
        repository: &str,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> Result<Option<String>, DbError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(sql("starting a transaction"))?;
        let manifest: Option<String> = match (tag, digest) {
            (_, Some(digest)) => {
                sqlx::query_scalar("SELECT digest FROM manifests WHERE digest = ?")
                    .bind(digest)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(sql("looking up an image"))?
            }
            (Some(tag), None) => {
                let found: Option<String> = sqlx::query_scalar(
                    "SELECT manifest_digest FROM image_tags WHERE repository = ? AND tag = ?",
                )
                .bind(repository)
                .bind(tag)
                .fetch_optional(&mut *tx)
                .await
                .map_err(sql("looking up a tag"))?;
                if found.is_some() {
                    sqlx::query("DELETE FROM image_tags WHERE repository = ? AND tag = ?")
                        .bind(repository)
                        .bind(tag)
                        .execute(&mut *tx)
                        .await
                        .map_err(sql("removing a tag"))?;
                }
                found
            }
            (None, None) => None,
        };
        let Some(manifest) = manifest else {
            return Err(DbError::NotFound {
                what: format!(
                    "image {repository}{}",
                    tag.map(|t| format!(":{t}")).unwrap_or_default()
                ),
            });
        };
        let names: i64 =
            sqlx::query_scalar("SELECT count(*) FROM image_tags WHERE manifest_digest = ?")
                .bind(&manifest)
                .fetch_one(&mut *tx)
                .await
                .map_err(sql("counting names"))?;
        let removed = if names == 0 || digest.is_some() {
            super::registry::forget_manifest(&mut tx, &manifest).await?;
            Some(manifest)
        } else {
            None
        };
        tx.commit().await.map_err(sql("committing"))?;
        Ok(removed)
    }

    /// Whether any recorded image still uses this blob (as manifest, config or layer) or layer.
    pub async fn blob_in_use(&self, digest: &str) -> Result<bool, DbError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM manifests WHERE digest = ?1 OR config_digest = ?1) + \
             (SELECT count(*) FROM manifest_layers WHERE blob_digest = ?1) + \
             (SELECT count(*) FROM manifest_references WHERE target = ?1) + \
             (SELECT count(*) FROM repository_manifests WHERE digest = ?1) + \
             (SELECT count(*) FROM repository_blobs WHERE digest = ?1)",
        )
        .bind(digest)
        .fetch_one(&self.pool)
        .await
        .map_err(sql("checking a blob's users"))?;
        Ok(n > 0)
    }

    pub async fn chain_in_use(&self, chain_id: &str) -> Result<bool, DbError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM manifest_layers WHERE chain_id = ?")
            .bind(chain_id)
            .fetch_one(&self.pool)
            .await
            .map_err(sql("checking a layer's users"))?;
        Ok(n > 0)
    }
}

impl Db {
    /// Manifests no name points at and no container uses (dangling images).
    pub async fn dangling_images(&self) -> Result<Vec<String>, DbError> {
        sqlx::query_scalar(
            "SELECT digest FROM manifests WHERE digest NOT IN (SELECT manifest_digest FROM image_tags) \
             AND digest NOT IN (SELECT image_digest FROM containers)",
        )
            .fetch_all(&self.pool)
            .await
            .map_err(sql("listing dangling images"))
    }
}

/// Inserts a runnable image's manifest and layer rows, and what the manifest references.
pub(super) async fn insert_image(
    tx: &mut sqlx::SqliteConnection,
    image: &NewImage,
    now: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO manifests (digest, media_type, config_digest, size, os, architecture, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING",
    )
    .bind(&image.digest)
    .bind(&image.media_type)
    .bind(&image.config_digest)
    .bind(image.size)
    .bind(&image.os)
    .bind(&image.architecture)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(sql("recording a manifest"))?;
    let blobs =
        std::iter::once(&image.config_digest).chain(image.layers.iter().map(|l| &l.blob_digest));
    for target in blobs {
        sqlx::query(
            "INSERT OR IGNORE INTO manifest_references (manifest_digest, target, kind) VALUES (?, ?, 'blob')",
        )
        .bind(&image.digest)
        .bind(target)
        .execute(&mut *tx)
        .await
        .map_err(sql("recording what a manifest references"))?;
    }
    for (position, layer) in image.layers.iter().enumerate() {
        sqlx::query(
            "INSERT INTO manifest_layers (manifest_digest, position, blob_digest, diff_id, chain_id, size, media_type) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (manifest_digest, position) DO NOTHING",
        )
        .bind(&image.digest)
        .bind(position as i64)
        .bind(&layer.blob_digest)
        .bind(&layer.diff_id)
        .bind(&layer.chain_id)
        .bind(layer.size)
        .bind(&layer.media_type)
        .execute(&mut *tx)
        .await
        .map_err(sql("recording a layer"))?;
    }
    Ok(())
}

/// Makes `repository` hold a local image's manifest (and its blobs), so the registry serves
/// every local image under each of its names.
async fn hold_in_repository(
    tx: &mut sqlx::SqliteConnection,
    repository: &str,
    digest: &str,
    now: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT OR IGNORE INTO repository_manifests (repository, digest, media_type, size, pushed_at) \
         SELECT ?1, digest, media_type, size, ?3 FROM manifests WHERE digest = ?2",
    )
    .bind(repository)
    .bind(digest)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(sql("adding a manifest to a repository"))?;
    sqlx::query(
        "INSERT OR IGNORE INTO repository_blobs (repository, digest) \
         SELECT ?1, target FROM manifest_references WHERE manifest_digest = ?2 AND kind = 'blob'",
    )
    .bind(repository)
    .bind(digest)
    .execute(&mut *tx)
    .await
    .map_err(sql("linking a manifest's blobs"))?;
    Ok(())
}

/// Points `repository:tag` at `digest`, moving the tag if it named another manifest.
pub(super) async fn set_tag(
    tx: &mut sqlx::SqliteConnection,
    repository: &str,
    tag: &str,
    digest: &str,
    now: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO image_tags (repository, tag, manifest_digest, updated_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (repository, tag) DO UPDATE SET manifest_digest = excluded.manifest_digest, updated_at = excluded.updated_at",
    )
    .bind(repository)
    .bind(tag)
    .bind(digest)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(sql("moving a tag"))?;
    Ok(())
}

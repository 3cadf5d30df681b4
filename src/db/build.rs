//! The build cache: which layer a build step made, by the step's key.

use super::{Db, DbError, now_secs, sql};

/// A layer a build step made.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CachedLayer {
    pub blob_digest: String,
    pub diff_id: String,
    pub size: i64,
}

impl Db {
    pub async fn build_cache_get(&self, key: &str) -> Result<Option<CachedLayer>, DbError> {
        sqlx::query_as::<_, CachedLayer>(
            "SELECT blob_digest, diff_id, size FROM build_cache WHERE key = ?",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql("reading the build cache"))
    }

    pub async fn build_cache_put(&self, key: &str, layer: &CachedLayer) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO build_cache (key, blob_digest, diff_id, size, created_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (key) DO UPDATE SET blob_digest = excluded.blob_digest, \
             diff_id = excluded.diff_id, size = excluded.size, created_at = excluded.created_at",
        )
        .bind(key)
        .bind(&layer.blob_digest)
        .bind(&layer.diff_id)
        .bind(layer.size)
        .bind(now_secs())
        .execute(&self.pool)
        .await
        .map_err(sql("writing the build cache"))?;
        Ok(())
    }

    /// The image a build whose last step had `key` made, if it is still recorded.
    pub async fn build_image_get(&self, key: &str) -> Result<Option<String>, DbError> {
        sqlx::query_scalar(
            "SELECT b.manifest_digest FROM build_images b JOIN manifests m ON m.digest = b.manifest_digest WHERE b.key = ?",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql("reading the build cache"))
    }

    pub async fn build_image_put(&self, key: &str, manifest_digest: &str) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO build_images (key, manifest_digest, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (key) DO UPDATE SET manifest_digest = excluded.manifest_digest, created_at = excluded.created_at",
        )
        .bind(key)
        .bind(manifest_digest)
        .bind(now_secs())
        .execute(&self.pool)
        .await
        .map_err(sql("writing the build cache"))?;
        Ok(())
    }
}

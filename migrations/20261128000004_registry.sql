-- Wharf schema, part 4: the built-in registry. One set of names for local images and the
-- registry: a tag may now name any manifest a repository holds (an index or an artifact too),
-- not only a runnable image, so image_tags loses its foreign key to manifests (the code removes
-- a manifest's tags with it). `manifests` stays the table of runnable images.

CREATE TABLE image_tags_new (
    repository      TEXT NOT NULL,
    tag             TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (repository, tag)
) STRICT;
INSERT INTO image_tags_new (repository, tag, manifest_digest, updated_at)
    SELECT repository, tag, manifest_digest, updated_at FROM image_tags;
DROP TABLE image_tags;
ALTER TABLE image_tags_new RENAME TO image_tags;
CREATE INDEX image_tags_by_manifest ON image_tags (manifest_digest);

-- Every manifest each repository holds, as the registry serves it (the bytes are a blob).
CREATE TABLE repository_manifests (
    repository    TEXT NOT NULL,
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    size          INTEGER NOT NULL,
    -- For the referrers API: artifactType (or the config's media type), subject, annotations.
    artifact_type TEXT,
    subject       TEXT,
    annotations   TEXT,                        -- a JSON object, or NULL
    pushed_at     INTEGER NOT NULL,
    PRIMARY KEY (repository, digest)
) STRICT;
CREATE INDEX repository_manifests_by_subject ON repository_manifests (repository, subject);
CREATE INDEX repository_manifests_by_digest ON repository_manifests (digest);
INSERT INTO repository_manifests (repository, digest, media_type, size, pushed_at)
    SELECT DISTINCT t.repository, m.digest, m.media_type, m.size, m.created_at
    FROM image_tags t JOIN manifests m ON m.digest = t.manifest_digest;

-- What a manifest points at: blobs (config, layers) and manifests (an index's entries). These
-- keep their targets alive against garbage collection.
CREATE TABLE manifest_references (
    manifest_digest TEXT NOT NULL,
    target          TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (manifest_digest, target)
) STRICT;
CREATE INDEX manifest_references_by_target ON manifest_references (target);
INSERT OR IGNORE INTO manifest_references (manifest_digest, target, kind)
    SELECT digest, config_digest, 'blob' FROM manifests;
INSERT OR IGNORE INTO manifest_references (manifest_digest, target, kind)
    SELECT manifest_digest, blob_digest, 'blob' FROM manifest_layers;

-- Blobs a repository may serve: uploaded or mounted into it, or used by its manifests. A blob
-- is only ever read through a repository the caller may pull.
CREATE TABLE repository_blobs (
    repository TEXT NOT NULL,
    digest     TEXT NOT NULL,
    PRIMARY KEY (repository, digest)
) STRICT;
CREATE INDEX repository_blobs_by_digest ON repository_blobs (digest);
INSERT OR IGNORE INTO repository_blobs (repository, digest)
    SELECT rm.repository, r.target FROM repository_manifests rm
    JOIN manifest_references r ON r.manifest_digest = rm.digest WHERE r.kind = 'blob';

-- Per-repository settings. A repository without a row has the defaults.
CREATE TABLE repositories (
    name           TEXT PRIMARY KEY NOT NULL,
    anonymous_pull INTEGER NOT NULL DEFAULT 0 CHECK (anonymous_pull IN (0, 1)),
    created_at     INTEGER NOT NULL
) STRICT;

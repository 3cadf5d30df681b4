-- Wharf schema, part 3: images. Blobs themselves live in the content store (<data-root>/blobs);
-- these rows say which blobs make which image and which names point at it.

-- One row per image manifest (OCI or Docker schema 2) known locally.
CREATE TABLE manifests (
    digest        TEXT PRIMARY KEY NOT NULL,   -- sha256:… of the manifest bytes (a blob)
    media_type    TEXT NOT NULL,
    config_digest TEXT NOT NULL,               -- the image config (a blob)
    size          INTEGER NOT NULL,            -- bytes of the manifest
    os            TEXT NOT NULL,
    architecture  TEXT NOT NULL,
    created_at    INTEGER NOT NULL             -- unix seconds when it arrived here
) STRICT;

-- The layers of a manifest, bottom first: what keeps their blobs and unpacked layers alive.
CREATE TABLE manifest_layers (
    manifest_digest TEXT NOT NULL REFERENCES manifests (digest) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    blob_digest     TEXT NOT NULL,             -- as stored (maybe compressed)
    diff_id         TEXT NOT NULL,             -- of the uncompressed tar
    chain_id        TEXT NOT NULL,             -- names its directory under <data-root>/layers
    size            INTEGER NOT NULL,
    media_type      TEXT NOT NULL,
    PRIMARY KEY (manifest_digest, position)
) STRICT;
CREATE INDEX manifest_layers_by_blob ON manifest_layers (blob_digest);

-- Names: repository:tag → manifest. A tag moves in one transaction.
CREATE TABLE image_tags (
    repository      TEXT NOT NULL,
    tag             TEXT NOT NULL,
    manifest_digest TEXT NOT NULL REFERENCES manifests (digest) ON DELETE CASCADE,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (repository, tag)
) STRICT;
CREATE INDEX image_tags_by_manifest ON image_tags (manifest_digest);

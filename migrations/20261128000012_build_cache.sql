-- Wharf schema, part 12: the build cache. A step of a build (its parent state, instruction and
-- the content it copies, hashed into `key`) maps to the layer it made; a hit is used only while
-- that layer's blob is still in the store.
CREATE TABLE build_cache (
    key         TEXT PRIMARY KEY,
    blob_digest TEXT NOT NULL,
    diff_id     TEXT NOT NULL,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

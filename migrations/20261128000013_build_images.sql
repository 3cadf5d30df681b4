-- Wharf schema, part 13: the images builds made, by the cache key of their last step, so a
-- build whose every step is cached names the image it made before (as docker's builder does)
-- instead of writing a new one.
CREATE TABLE build_images (
    key             TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL,
    created_at      INTEGER NOT NULL
) STRICT;

-- Wharf schema, part 9: when a repository was last given (or asked for) a blob, so that
-- collection and image removal judge a link by its own age, not by the blob file's.
ALTER TABLE repository_blobs ADD COLUMN linked_at INTEGER NOT NULL DEFAULT 0;

-- Wharf schema, part 5: containers. The container's files (bundle, upper dir, logs, exit
-- status) live under <data-root>/containers/<id>/; this row is what the API lists.
CREATE TABLE containers (
    id           TEXT PRIMARY KEY NOT NULL,     -- 64 lower-case hex digits
    name         TEXT NOT NULL UNIQUE,
    image        TEXT NOT NULL,                 -- the reference it was created from
    image_digest TEXT NOT NULL,                 -- the manifest it runs (keeps the image in use)
    config       TEXT NOT NULL,                 -- JSON: engine::ContainerConfig
    state        TEXT NOT NULL CHECK (state IN ('created', 'running', 'exited')),
    pid          INTEGER,
    exit_code    INTEGER,
    error        TEXT,                          -- why it could not start, if it could not
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER
) STRICT;
CREATE INDEX containers_by_image ON containers (image_digest);

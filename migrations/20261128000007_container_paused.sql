-- Wharf schema, part 7: a container may be paused (its cgroup frozen). SQLite cannot change a
-- CHECK constraint in place, so the table is rebuilt with the same rows.
CREATE TABLE containers_new (
    id              TEXT PRIMARY KEY NOT NULL,
    name            TEXT NOT NULL UNIQUE,
    image           TEXT NOT NULL,
    image_digest    TEXT NOT NULL,
    config          TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('created', 'running', 'paused', 'exited')),
    pid             INTEGER,
    exit_code       INTEGER,
    error           TEXT,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    restart_count   INTEGER NOT NULL DEFAULT 0,
    stopped_by_user INTEGER NOT NULL DEFAULT 0
) STRICT;
INSERT INTO containers_new SELECT id, name, image, image_digest, config, state, pid, exit_code,
    error, created_at, started_at, finished_at, restart_count, stopped_by_user FROM containers;
DROP TABLE containers;
ALTER TABLE containers_new RENAME TO containers;
CREATE INDEX containers_by_image ON containers (image_digest);

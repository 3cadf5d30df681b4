-- Wharf schema, part 1: the daemon's own records.
-- Later migrations add users, images, registry, containers, volumes and networks.

-- Settings of this daemon that outlive a restart, such as its id.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;

-- The event log (what `docker events` shows): appended, never updated.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    time_nano  INTEGER NOT NULL,
    type       TEXT NOT NULL,          -- daemon, container, image, network, volume, ...
    action     TEXT NOT NULL,          -- start, stop, pull, push, ...
    actor_id   TEXT NOT NULL,          -- the id of the thing the event is about
    attributes TEXT NOT NULL DEFAULT '{}'  -- JSON object of strings
) STRICT;

CREATE INDEX events_by_time ON events (time_nano);

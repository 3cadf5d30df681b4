-- Wharf schema, part 10: networks and the addresses their containers hold. An address is
-- handed out once per network (the unique index), and goes back when its endpoint goes.
CREATE TABLE networks (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL UNIQUE,
    driver     TEXT NOT NULL CHECK (driver IN ('bridge')),
    subnet     TEXT NOT NULL UNIQUE,               -- a.b.c.d/len
    gateway    TEXT NOT NULL,                      -- the bridge's own address
    bridge     TEXT NOT NULL UNIQUE,               -- the bridge device
    -- The default network (docker's `bridge`): no name resolution between its containers.
    is_default INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE endpoints (
    network_id   TEXT NOT NULL REFERENCES networks (id),
    container_id TEXT NOT NULL,
    ip           TEXT NOT NULL,
    -- The host end of the container's veth pair.
    host_veth    TEXT NOT NULL,
    aliases      TEXT NOT NULL DEFAULT '[]',      -- a JSON list of names
    PRIMARY KEY (network_id, container_id),
    UNIQUE (network_id, ip)
) STRICT;
CREATE INDEX endpoints_by_container ON endpoints (container_id);

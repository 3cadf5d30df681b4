-- Wharf schema, part 11: published ports. A host address and port (per protocol) goes to one
-- container at a time; the mapping lives while the container runs.
CREATE TABLE port_mappings (
    container_id   TEXT NOT NULL,
    host_ip        TEXT NOT NULL,              -- 0.0.0.0 for every address
    host_port      INTEGER NOT NULL,
    container_port INTEGER NOT NULL,
    protocol       TEXT NOT NULL CHECK (protocol IN ('tcp', 'udp')),
    PRIMARY KEY (host_port, protocol, host_ip)
) STRICT;
CREATE INDEX port_mappings_by_container ON port_mappings (container_id);

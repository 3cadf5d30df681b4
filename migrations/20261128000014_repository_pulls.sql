-- Wharf schema, part 14: how often each manifest of a repository was pulled (a GET of the
-- manifest through the registry), and when last, for the dashboard.
CREATE TABLE repository_pulls (
    repository     TEXT NOT NULL,
    digest         TEXT NOT NULL,
    pulls          INTEGER NOT NULL,
    last_pulled_at INTEGER NOT NULL,
    PRIMARY KEY (repository, digest)
) STRICT;

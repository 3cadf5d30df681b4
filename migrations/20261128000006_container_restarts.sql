-- Wharf schema, part 6: restart policies. How often a container was restarted by its policy,
-- and whether a user stopped it (an `unless-stopped` container then stays down at boot).
ALTER TABLE containers ADD COLUMN restart_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE containers ADD COLUMN stopped_by_user INTEGER NOT NULL DEFAULT 0;

-- Wharf schema, part 8: a container's health (JSON: status, failing streak, last results),
-- kept while its healthcheck runs and shown by inspect.
ALTER TABLE containers ADD COLUMN health TEXT;

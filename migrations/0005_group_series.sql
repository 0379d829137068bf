-- A group's own aggregate series (SPEC §3): member count and avg/sum/min/max of
-- the members' series, recorded every base step by server/src/groups. They must
-- outlive the members that fed them, so they cannot belong to a member: they
-- belong to a row of `hosts` that stands for the group itself (kind = 'group',
-- hostname = the group's name, group_name NULL, passive, never `down`). Every
-- query about instances filters on kind = 'host'; the series, archives and
-- journal machinery is shared unchanged.
ALTER TABLE hosts ADD COLUMN kind TEXT NOT NULL DEFAULT 'host' CHECK (kind IN ('host', 'group'));

-- A group named like a host must not take the host's identity, nor the reverse.
DROP INDEX hosts_hostname;
CREATE UNIQUE INDEX hosts_hostname ON hosts(hostname) WHERE instance_id IS NULL AND kind = 'host';
CREATE UNIQUE INDEX hosts_group_owner ON hosts(hostname) WHERE kind = 'group';

-- Administration from the dashboard (issue 19).
--
-- A disabled user keeps its row (who acknowledged what stays readable) but
-- cannot log in, and its sessions are deleted when it is disabled.
ALTER TABLE users ADD COLUMN disabled_at INTEGER;

-- When an operator or enrollment token was last used, shown on the admin
-- page. Written at most once a minute per token (see store::auth), and not
-- for agent tokens: hosts.last_seen already says when an agent last spoke.
ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;

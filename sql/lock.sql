-- name: role
-- Serialises every provision command on one role name until the transaction ends. The first key
-- ('prov' in ASCII) keeps these locks apart from an application's own advisory locks.
SELECT pg_catalog.pg_advisory_xact_lock(1886547830, pg_catalog.hashtext(%(role)s))

-- name: role
-- Serialises every provision command on one role name until the transaction ends. The first key
-- ('prov' in ASCII) keeps these locks apart from an application's own advisory locks.
SELECT pg_catalog.pg_advisory_xact_lock(1886547830, pg_catalog.hashtext(%(role)s))

-- name: timeout
-- How long the lock may be waited for, in this transaction only: a session that never lets go must
-- not hang every later run on the same role.
SELECT pg_catalog.set_config('lock_timeout', %(wait)s, true)

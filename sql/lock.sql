-- name: role
-- Serialises every provision command on one role name until the transaction ends. The first key
-- ('prov' in ASCII) keeps these locks apart from an application's own advisory locks.
SELECT pg_catalog.pg_advisory_xact_lock(1886547830, pg_catalog.hashtext(%(role)s))

-- name: bounds
-- How long each statement may run and each lock may be waited for, in this transaction only: a
-- server that stalls, or a session that never lets go of a lock, must not hang the command.
SELECT pg_catalog.set_config('statement_timeout', %(statement)s, true),
    pg_catalog.set_config('lock_timeout', %(lock)s, true)

-- name: server
-- Which Azure flavor answers, as whom, and what that admin may do: one round trip.
-- Flexible Server has the pgaadauth functions; Single Server has the role azure_ad_user.
SELECT
    EXISTS (SELECT 1 FROM pg_catalog.pg_proc WHERE proname = 'pgaadauth_create_principal_with_oid') AS flexible,
    EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'azure_ad_user') AS single,
    current_user::text AS admin,
    pg_catalog.current_database()::text AS database,
    pg_catalog.has_table_privilege('pg_catalog.pg_authid', 'SELECT') AS reads_verifiers,
    pg_catalog.has_database_privilege(current_user, pg_catalog.current_database(), 'CONNECT WITH GRANT OPTION')
        AS grants_connect,
    pg_catalog.has_database_privilege('public', pg_catalog.current_database(), 'CONNECT') AS public_connect

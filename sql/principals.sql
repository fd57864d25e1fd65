-- name: flexible
-- Every Entra principal of a Flexible Server (false: administrators and the rest alike).
SELECT * FROM pgaadauth_list_principals(false)

-- name: single
-- Single Server: the Entra roles are the members of azure_ad_user.
SELECT r.rolname::text AS role, r.rolcanlogin AS can_login
FROM pg_catalog.pg_auth_members m
    JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
    JOIN pg_catalog.pg_roles r ON r.oid = m.member
WHERE g.rolname = 'azure_ad_user'
ORDER BY 1

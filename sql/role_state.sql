-- name: role
-- The role, its direct memberships, and whether it holds CONNECT on this database by an explicit grant.
SELECT
    r.oid,
    r.rolcanlogin AS can_login,
    ARRAY(
        SELECT g.rolname::text
        FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
        WHERE m.member = r.oid
        ORDER BY 1
    ) AS member_of,
    EXISTS (
        SELECT 1
        FROM pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a
        WHERE d.datname = pg_catalog.current_database() AND a.grantee = r.oid AND a.privilege_type = 'CONNECT'
    ) AS connect_granted,
    pg_catalog.pg_has_role(current_user, r.oid, 'USAGE') AS admin_has_privileges,
    pg_catalog.shobj_description(r.oid, 'pg_authid') AS description
FROM pg_catalog.pg_roles r
WHERE r.rolname = %(role)s

-- name: verifier
-- The stored password verifier (SCRAM or md5); only superusers may read pg_authid.
SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = %(role)s

-- name: principal
-- Flexible Server: the Entra principal registered under this role name, if any.
SELECT * FROM pgaadauth_list_principals(false) WHERE rolname = %(role)s

-- name: dependencies
-- What the role owns ('o') or holds privileges on ('a', 'r', 'i'), in every database. Objects are
-- described only where this connection can see their catalogs: here, or shared objects.
SELECT
    s.deptype = 'o' AS owned,
    d.datname::text AS database,
    s.dbid IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())) AS here,
    CASE
        WHEN s.dbid IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))
        THEN pg_catalog.pg_describe_object(s.classid, s.objid, s.objsubid)
    END AS object
FROM pg_catalog.pg_shdepend s LEFT JOIN pg_catalog.pg_database d ON d.oid = s.dbid
WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
    AND s.refobjid = %(oid)s
    AND s.deptype IN ('o', 'a', 'r', 'i')
ORDER BY 1 DESC, 2, 4

-- name: groups
-- Every role that membership in the named groups reaches, the groups themselves included, through
-- pg_auth_members (the groups each is a member of, transitively), with what that role may do. A
-- member can SET ROLE to any of them, so each must be harmless. PostgreSQL forbids circular
-- memberships; the path check keeps the recursion finite regardless. `grantable`: whether this
-- connection may grant the role. Up to PostgreSQL 15 CREATEROLE grants any role but a superuser;
-- from 16 only ADMIN OPTION on it does (release notes 16: "Restrict the privileges of CREATEROLE").
WITH RECURSIVE reached(oid, path) AS (
    SELECT r.oid, ARRAY[r.rolname::text]
    FROM pg_catalog.pg_roles r
    WHERE r.rolname = ANY(%(roles)s)
  UNION
    SELECT m.roleid, reached.path || g.rolname::text
    FROM reached
        JOIN pg_catalog.pg_auth_members m ON m.member = reached.oid
        JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
    WHERE g.rolname::text <> ALL(reached.path)
)
SELECT
    reached.path,
    r.rolcanlogin AS can_login,
    pg_catalog.array_remove(ARRAY[
        CASE WHEN r.rolsuper THEN 'SUPERUSER' END,
        CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END,
        CASE WHEN r.rolcreatedb THEN 'CREATEDB' END,
        CASE WHEN r.rolreplication THEN 'REPLICATION' END,
        CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' END
    ], NULL) AS powers,
    pg_catalog.pg_has_role(current_user, r.oid, 'USAGE WITH ADMIN OPTION')
        OR (pg_catalog.current_setting('server_version_num')::integer < 160000 AND NOT r.rolsuper
            AND (SELECT a.rolcreaterole FROM pg_catalog.pg_roles a WHERE a.rolname = current_user))
        AS grantable
FROM reached JOIN pg_catalog.pg_roles r ON r.oid = reached.oid
ORDER BY pg_catalog.array_length(reached.path, 1), reached.path

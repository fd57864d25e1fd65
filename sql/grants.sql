-- name: schema
-- The schema, the privileges the role holds on it by a direct grant (aclexplode of nspacl), those
-- PUBLIC holds (grantee 0), and those the admin may grant: GRANT by someone without the grant option
-- only warns ("no privileges were granted") and changes nothing. No row: the schema does not exist.
-- A role that does not exist holds nothing.
SELECT
    n.nspname::text AS object,
    ARRAY(
        SELECT a.privilege_type::text
        FROM pg_catalog.aclexplode(n.nspacl) a
        WHERE a.grantee = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %(role)s)
    ) AS held,
    ARRAY(SELECT a.privilege_type::text FROM pg_catalog.aclexplode(n.nspacl) a WHERE a.grantee = 0) AS public,
    ARRAY(
        SELECT p FROM pg_catalog.unnest(%(privileges)s::text[]) p
        WHERE pg_catalog.has_schema_privilege(n.oid, p || ' WITH GRANT OPTION')
    ) AS grantable
FROM pg_catalog.pg_namespace n
WHERE n.nspname = %(schema)s

-- name: relations
-- Each relation of the given kinds in the schema (one, when a table is named), with the privileges the
-- role holds on it by a direct grant, those PUBLIC holds, and those the admin may grant. GRANT ... ON ALL TABLES covers tables, views, materialized views,
-- foreign and partitioned tables (relkind r, v, m, f, p); ON ALL SEQUENCES covers relkind S.
SELECT
    c.relname::text AS object,
    ARRAY(
        SELECT a.privilege_type::text
        FROM pg_catalog.aclexplode(c.relacl) a
        WHERE a.grantee = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %(role)s)
    ) AS held,
    ARRAY(SELECT a.privilege_type::text FROM pg_catalog.aclexplode(c.relacl) a WHERE a.grantee = 0) AS public,
    ARRAY(
        SELECT p FROM pg_catalog.unnest(%(privileges)s::text[]) p
        WHERE CASE WHEN c.relkind = 'S' THEN pg_catalog.has_sequence_privilege(c.oid, p || ' WITH GRANT OPTION')
            ELSE pg_catalog.has_table_privilege(c.oid, p || ' WITH GRANT OPTION') END
    ) AS grantable
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s
    AND c.relkind::text = ANY(%(kinds)s)
    AND (%(table)s::text IS NULL OR c.relname = %(table)s::text)
ORDER BY 1

-- name: future
-- The default privileges the owner's future tables in the schema give the role (pg_default_acl,
-- defaclobjtype 'r'), and whether the owner exists.
SELECT
    %(owner)s::text AS object,
    EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %(owner)s) AS owner_exists,
    ARRAY(
        SELECT a.privilege_type::text
        FROM pg_catalog.pg_default_acl d
            JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace
            JOIN pg_catalog.pg_roles o ON o.oid = d.defaclrole,
            pg_catalog.aclexplode(d.defaclacl) a
        WHERE n.nspname = %(schema)s AND o.rolname = %(owner)s AND d.defaclobjtype = 'r'
            AND a.grantee = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %(role)s)
    ) AS held

-- name: grant_schema
GRANT {privileges} ON SCHEMA {schema} TO {role}

-- name: revoke_schema
REVOKE {privileges} ON SCHEMA {schema} FROM {role}

-- name: grant_all_tables
GRANT {privileges} ON ALL TABLES IN SCHEMA {schema} TO {role}

-- name: revoke_all_tables
REVOKE {privileges} ON ALL TABLES IN SCHEMA {schema} FROM {role}

-- name: grant_all_sequences
GRANT {privileges} ON ALL SEQUENCES IN SCHEMA {schema} TO {role}

-- name: revoke_all_sequences
REVOKE {privileges} ON ALL SEQUENCES IN SCHEMA {schema} FROM {role}

-- name: grant_table
GRANT {privileges} ON TABLE {table} TO {role}

-- name: revoke_table
REVOKE {privileges} ON TABLE {table} FROM {role}

-- name: grant_future_tables
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} GRANT {privileges} ON TABLES TO {role}

-- name: revoke_future_tables
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} REVOKE {privileges} ON TABLES FROM {role}

-- Azure Database for PostgreSQL Flexible Server's Microsoft Entra functions, emulated.
--
-- Which Entra object each role belongs to is kept in pgaadauth.principals, keyed by the role's oid
-- so that a dropped role's entry is ignored (and a new role of the same name starts unmapped).
-- Users cannot read or write that table; the functions that touch it are SECURITY DEFINER with a
-- fixed search_path. Roles themselves are created with the caller's privileges, as on Azure, where
-- the Entra admin is not a superuser. The gateway reads the table to check a token's oid at login.
--
-- Like Azure's, these functions ask Microsoft Entra ID about the principal they are given: which object an
-- object id is (and its type), which object has a name. The emulator's directory lives in the emulator's
-- process and changes with every identity Resource Manager creates or deletes, so the cluster keeps no copy
-- (which could drift): pgaadauth.ask_directory asks the emulator live, over a Unix socket in the cluster's
-- own socket directory that only the server's user may use, through COPY FROM PROGRAM (a superuser's power,
-- hence SECURITY DEFINER; perl is always there: Debian's PostgreSQL depends on it).

CREATE ROLE azure_pg_admin NOLOGIN;

CREATE SCHEMA pgaadauth;
GRANT USAGE ON SCHEMA pgaadauth TO PUBLIC;

CREATE TABLE pgaadauth.settings (
    tenant_id text NOT NULL,
    -- The emulator answers "which object id has this name?" on this Unix socket.
    directory_socket text NOT NULL
);

CREATE TABLE pgaadauth.principals (
    roleoid oid PRIMARY KEY,
    objectid text NOT NULL,
    principaltype text NOT NULL,
    tenantid text NOT NULL,
    ismfa boolean NOT NULL,
    isadmin boolean NOT NULL
);

CREATE FUNCTION pgaadauth.assert_admin() RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $function$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = session_user AND rolsuper)
        AND NOT EXISTS (
            SELECT 1 FROM pgaadauth.principals p JOIN pg_roles r ON r.oid = p.roleoid
            WHERE r.rolname = session_user AND p.isadmin
        )
    THEN
        RAISE insufficient_privilege
            USING MESSAGE = format('role "%s" is not a Microsoft Entra admin: only Entra admins manage Entra principals',
                                   session_user);
    END IF;
END
$function$;

CREATE FUNCTION pgaadauth.register(role_name text, object_id text, principal_type text, is_admin boolean,
                                   is_mfa boolean) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $function$
BEGIN
    PERFORM pgaadauth.assert_admin();
    DELETE FROM pgaadauth.principals WHERE roleoid NOT IN (SELECT oid FROM pg_roles);
    INSERT INTO pgaadauth.principals (roleoid, objectid, principaltype, tenantid, ismfa, isadmin)
    SELECT r.oid, lower(object_id), principal_type, s.tenant_id, is_mfa, is_admin
    FROM pg_roles r, pgaadauth.settings s
    WHERE r.rolname = role_name AND NOT r.rolsuper  -- no way from Entra admin to superuser
    ON CONFLICT (roleoid) DO UPDATE
        SET objectid = EXCLUDED.objectid, principaltype = EXCLUDED.principaltype, ismfa = EXCLUDED.ismfa,
            isadmin = EXCLUDED.isadmin;
END
$function$;

-- Entra's answer about an object id (question 'oid') or a name (question 'name'): '<object id> <type>', the
-- type in pgaadauth's words (user, group, service); NULL when the tenant has no such object.
CREATE FUNCTION pgaadauth.ask_directory(question text, value text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    ask constant text := 'my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "directory: $!\n";'
                         ' print $s "$ARGV[1] $ARGV[2]\n"; $s->shutdown(1); print while <$s>;';
    socket_path text := (SELECT directory_socket FROM pgaadauth.settings);
    answer text;
BEGIN
    PERFORM pgaadauth.assert_admin();
    IF question NOT IN ('oid', 'name') THEN
        RAISE invalid_parameter_value USING MESSAGE = format('no such directory question: %s', question);
    END IF;
    CREATE TEMP TABLE pgaadauth_answer (line text);
    EXECUTE format('COPY pg_temp.pgaadauth_answer FROM PROGRAM %L',
                   format('perl -MIO::Socket::UNIX -e %s %s %s %s', pgaadauth.shell_quote(ask),
                          pgaadauth.shell_quote(socket_path), question,
                          encode(convert_to(value, 'UTF8'), 'hex')));
    SELECT nullif(line, '') INTO answer FROM pg_temp.pgaadauth_answer;
    DROP TABLE pg_temp.pgaadauth_answer;
    RETURN answer;
END
$function$;

CREATE FUNCTION pgaadauth.shell_quote(value text) RETURNS text
LANGUAGE sql IMMUTABLE AS $function$
    SELECT '''' || replace(value, '''', '''"''"''') || ''''
$function$;

-- Azure's 15 refuses its admin "only superusers can grant role pg_execute_server_program"
-- (MicrosoftDocs/azure-docs#87052), a check of Azure's own build; stock 15 lets a CREATEROLE role grant any
-- role that is not a superuser (AddRoleMems, src/backend/commands/user.c), and ALTER ROLE refuses the reserved
-- pg_* roles. So on 15 the catalog itself marks the roles that reach the server's operating system rolsuper,
-- and 15 refuses the admin in its own words, "must be superuser to alter superusers" (42501), where Azure
-- says the message above. The source names pg_execute_server_program only; pg_read_server_files and
-- pg_write_server_files reach the server's files as it reaches its programs, so they get the same, the
-- stricter choice. rolsuper is not inherited: their members are not superusers. pg_roles shows rolsuper
-- for the three, which Azure's does not. 16+ refuse through ADMIN OPTION (below).
DO $os_roles$
BEGIN
    IF pg_catalog.current_setting('server_version_num')::integer < 160000 THEN
        UPDATE pg_catalog.pg_authid SET rolsuper = true
        WHERE rolname IN ('pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files');
    END IF;
END
$os_roles$;

-- Azure: "Created role for <roleName>"; isAdmin makes a member of azure_pg_admin with CREATEROLE and CREATEDB.
-- The role is created with the caller's privileges, so from PostgreSQL 16 the calling admin holds ADMIN
-- OPTION on it (granted to a CREATEROLE creator) and may drop it, as Azure's Entra admin may
-- (MicrosoftDocs/azure-docs#119982). The admin holds no ADMIN OPTION on the predefined roles, so on 16+
-- it cannot grant them (Azure/azure-service-operator#4639). Azure has since let azure_pg_admin grant some
-- of them (DataDog/documentation#39602 cites "Improved control for azure_pg_admin") without saying which:
-- the emulator keeps the stricter behaviour.
-- On 15 the admin is refused the three roles that reach the server's operating system otherwise (above).
CREATE FUNCTION pg_catalog.pgaadauth_create_principal_with_oid(rolename text, objectid text, objecttype text,
                                                               isadmin boolean, ismfa boolean) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    found text;
BEGIN
    PERFORM pgaadauth.assert_admin();
    IF objecttype IS NULL OR objecttype NOT IN ('user', 'group', 'service') THEN
        RAISE invalid_parameter_value
            USING MESSAGE = format('invalid objectType "%s": expected user, group or service', objecttype);
    END IF;
    IF objectid IS NULL OR objectid !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RAISE invalid_parameter_value USING MESSAGE = format('invalid objectId "%s": expected a GUID', objectid);
    END IF;
    found := pgaadauth.ask_directory('oid', objectid);
    -- Azure's words, raised by its SECURITY LABEL hook before the role is kept: an object the tenant does not
    -- have (Azure's "Connect with managed identity" for Flexible Server, MicrosoftDocs/azure-docs#117206; no
    -- SQLSTATE published: XX000, as the same hook gives for the wrong type), and an object of another type
    -- (XX000, MicrosoftDocs/azure-docs#102814). A client id is not an object id, so it is not found either.
    IF found IS NULL THEN
        RAISE internal_error
            USING MESSAGE = format('Could not validate AAD user %s because its name is not found in the tenant.',
                                   objectid);
    END IF;
    IF split_part(found, ' ', 2) <> objecttype THEN
        RAISE internal_error
            USING MESSAGE = format('incorrect object type provided for principal, given object type: ''%s'','
                                   ' actual object type: ''%s''', objecttype, split_part(found, ' ', 2));
    END IF;
    EXECUTE format('CREATE ROLE %I WITH LOGIN', rolename);
    IF isadmin THEN
        EXECUTE format('ALTER ROLE %I WITH CREATEROLE CREATEDB', rolename);
        EXECUTE format('GRANT azure_pg_admin TO %I WITH ADMIN OPTION', rolename);
    END IF;
    PERFORM pgaadauth.register(rolename, objectid, objecttype, coalesce(isadmin, false), coalesce(ismfa, false));
    RETURN format('Created role for "%s"', rolename);
END
$function$;

-- Azure looks the name up in Microsoft Entra ID (a user's principal name, a group's or service principal's
-- display name) and creates the role for the object found, of its type. A name the tenant does not have gets
-- the unknown object's answer (MicrosoftDocs/azure-docs#117206 documents it for this function).
CREATE FUNCTION pg_catalog.pgaadauth_create_principal(rolename text, isadmin boolean, ismfa boolean) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $function$
DECLARE
    found text;
BEGIN
    PERFORM pgaadauth.assert_admin();
    found := pgaadauth.ask_directory('name', rolename);
    IF found IS NULL THEN
        RAISE internal_error
            USING MESSAGE = format('Could not validate AAD user %s because its name is not found in the tenant.',
                                   rolename);
    END IF;
    RETURN pg_catalog.pgaadauth_create_principal_with_oid(rolename, split_part(found, ' ', 1),
                                                          split_part(found, ' ', 2), isadmin, ismfa);
END
$function$;

-- Azure: TABLE(rolname name, principalType text, objectId text, tenantId text, isMfa integer, isAdmin integer);
-- true lists the admins only, false everyone.
CREATE FUNCTION pg_catalog.pgaadauth_list_principals(isadminvalue boolean)
RETURNS TABLE (rolname name, principaltype text, objectid text, tenantid text, ismfa integer, isadmin integer)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $function$
    SELECT r.rolname, p.principaltype, p.objectid, p.tenantid, p.ismfa::integer, p.isadmin::integer
    FROM pgaadauth.principals p JOIN pg_roles r ON r.oid = p.roleoid
    WHERE p.isadmin OR NOT $1
    ORDER BY r.rolname
$function$;

-- Azure Database for PostgreSQL Single Server, as the emulator seeds it.
-- Entra roles are members of azure_ad_user; the Entra admin (a member of azure_ad_admin, not a
-- superuser) creates them with CREATE ROLE ... PASSWORD '<client id>' IN ROLE azure_ad_user.
-- The gateway checks logins against these roles; nothing else here knows about tokens.

CREATE ROLE azure_ad_user NOLOGIN;
CREATE ROLE azure_ad_admin NOLOGIN;
CREATE ROLE aadadmin WITH LOGIN CREATEROLE CREATEDB IN ROLE azure_ad_admin;
GRANT azure_ad_user TO aadadmin WITH ADMIN OPTION;
-- Single Server validates Entra object ids until a session turns it off (the gateway maps the
-- setting to this stand-in, which every session starts with).
ALTER ROLE ALL SET azure.aad_validate_oids_in_tenant = on;

-- name: single_trust_client_id
-- Single Server checks that the password is an object id in the tenant unless told not to; a
-- managed identity's client id is not one. Flexible Server has no such setting and fails on it.
SET aad_validate_oids_in_tenant = off

-- name: single
CREATE ROLE {role} WITH LOGIN PASSWORD {client_id} IN ROLE azure_ad_user

-- name: flexible
-- Arguments: role name, object (principal) id, principal type, is admin, is MFA.
SELECT * FROM pgaadauth_create_principal_with_oid({role}, {object_id}, 'service', false, false)

-- name: single_record_client_id
-- PostgreSQL keeps the password only as a verifier that Azure's admin cannot read, so the client id
-- the role was created for is also recorded where a re-run can compare it (a client id is no secret).
COMMENT ON ROLE {role} IS {record}

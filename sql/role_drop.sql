-- name: admin_joins
-- REASSIGN OWNED and DROP OWNED need the privileges of the role; a CREATEROLE admin that is not a
-- superuser gets them this way, and the membership goes with the role.
GRANT {role} TO CURRENT_USER

-- name: reassign_owned
REASSIGN OWNED BY {role} TO CURRENT_USER

-- name: drop_owned
-- With nothing owned left, this only revokes the role's privileges here and on shared objects.
DROP OWNED BY {role}

-- name: drop
DROP ROLE {role}

-- name: connect
GRANT CONNECT ON DATABASE {database} TO {role}

-- name: member
GRANT {group} TO {role}

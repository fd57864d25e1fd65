"""The emulated Azure Database for PostgreSQL: clusters run as the postgres user, behind a TLS gateway."""

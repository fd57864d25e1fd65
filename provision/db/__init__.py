"""The PostgreSQL side. Only this package imports psycopg, always inside functions."""

"""SQL statements the tool runs, one file per statement family."""

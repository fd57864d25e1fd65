"""The local Azure stack: Resource Manager, the Instance Metadata Service and Azure Database for
PostgreSQL (Single and Flexible Server), all on loopback, for tests, the demo and offline pipelines."""

"""Fixtures that start the local Azure stack (being built)."""

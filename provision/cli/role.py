"""Placeholder until the `role` commands land."""

import click


@click.group()
def role() -> None:
    """Not built yet."""

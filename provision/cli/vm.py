"""Placeholder until the VM-side commands land."""

import click


@click.command()
def token() -> None:
    """Not built yet."""


@click.command()
def check() -> None:
    """Not built yet."""


@click.command()
def psql() -> None:
    """Not built yet."""

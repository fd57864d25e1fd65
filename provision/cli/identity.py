"""Placeholder until the identity commands land."""

import click


@click.group()
def identity() -> None:
    """Not built yet."""

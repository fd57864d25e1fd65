"""Placeholder until the `emulator` commands land."""

import click


@click.group()
def emulator() -> None:
    """Not built yet."""

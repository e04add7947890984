"""The composition root: the ``yurong`` console script (``commands``), the demo and what they share."""

from streams.cli.commands import main

__all__ = ["main"]

"""``python -m streams.cli`` — the ``yurong`` console script (the demo starts its children so)."""

from streams.cli import main

main()

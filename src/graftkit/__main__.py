"""`python -m graftkit` is `graft`."""

from graftkit.cli import main

main()

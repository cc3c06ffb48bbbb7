"""`python -m rsuper`: the console script without its installed entry point."""

from rsuper.cli import main

main()

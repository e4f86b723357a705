"""``python -m headpursuit.cli``: the same as the ``headpursuit`` console script."""

from . import main

main()

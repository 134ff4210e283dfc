"""``python -m tokenhub``: the same as the ``tokenhub`` console script."""

from __future__ import annotations

from tokenhub._cli import main

main()

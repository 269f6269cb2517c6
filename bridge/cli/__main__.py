"""``python -m bridge.cli``: the same as the ``busbridge`` command."""

from .main import main

main()

"""The ``busbridge`` command: one module per command. Nothing imports this package."""

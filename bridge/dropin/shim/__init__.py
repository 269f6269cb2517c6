"""Modules named like the libraries they replace; ``busbridge run`` puts this
directory first on the child's ``PYTHONPATH``.  Each only re-exports
:mod:`bridge.dropin`, so none of them imports the real library it shadows."""

"""The ``busbridge`` command and its i2c-tools parsing: bridge/cli/'s tests."""

"""Real buses on a Linux board: ``/dev/i2c-N`` (i2c-dev) and ``/dev/spidevB.C`` (spidev)."""

"""The drop-in layers: smbus2, spidev and Blinka programs run unchanged against a remote board."""

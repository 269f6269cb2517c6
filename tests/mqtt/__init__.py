"""Control-plane tests against a real Mosquitto broker."""

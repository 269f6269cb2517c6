"""Reliability suites: faults, load and fuzzing against real servers on 127.0.0.1."""

"""The lab control plane over MQTT: presence, inventory and health of boards, discovery by name.

The data path never goes through the broker: a board server publishes about
itself beside serving (:mod:`.presence`), and clients only ask the broker where
a board is (:mod:`.discovery`) before dialling it directly.  Topics and payloads
are in :mod:`.topics` and docs/mqtt.md.  Importing this package does not import
``aiomqtt``; the modules that talk to a broker do (``pip install 'busbridge[mqtt]'``).
"""

from __future__ import annotations

from .topics import DEFAULT_PREFIX, BrokerAddress, Topics

__all__ = ["DEFAULT_PREFIX", "BrokerAddress", "Topics"]

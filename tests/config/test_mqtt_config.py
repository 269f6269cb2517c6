"""The [mqtt] board-file section and broker addresses (no broker needed)."""

from __future__ import annotations

import pytest

from bridge.config import BoardConfigError, board_config_from_toml_text
from bridge.mqtt.topics import BrokerAddress, Topics


def test_mqtt_section_defaults_and_errors() -> None:
    cfg = board_config_from_toml_text('name = "b"\n[mqtt]\nbroker = "mqtt.lab"\n')
    assert cfg.mqtt is not None
    assert (cfg.mqtt.prefix, cfg.mqtt.keepalive_s, cfg.mqtt.client_id) == ("busbridge", 30, "")
    assert board_config_from_toml_text('name = "b"\n').mqtt is None
    with pytest.raises(BoardConfigError) as e:
        board_config_from_toml_text('name = "b"\n[mqtt]\nbroker = "x"\nkeepalive = 5\n'
                                    'advertise = "nohost"\n')
    assert "mqtt > keepalive: unknown setting (typo?)" in e.value.problems
    assert any(p.startswith("mqtt > advertise: 'nohost' must be host:port")
               for p in e.value.problems)
    with pytest.raises(BoardConfigError, match="mqtt > broker"):
        board_config_from_toml_text('name = "b"\n[mqtt]\nprefix = "lab"\n')


@pytest.mark.parametrize(("text", "expected"), [
    ("mqtt.lab", BrokerAddress("mqtt.lab", 1883)),
    ("10.0.0.5:1884", BrokerAddress("10.0.0.5", 1884)),
    ("mqtts://mqtt.lab", BrokerAddress("mqtt.lab", 8883, tls=True)),
    ("mqtt://ci:s%40cret@mqtt.lab:1999", BrokerAddress("mqtt.lab", 1999, False, "ci", "s@cret")),
    ("[::1]:1883", BrokerAddress("::1", 1883)),
])
def test_broker_address(text: str, expected: BrokerAddress) -> None:
    assert BrokerAddress.parse(text) == expected


@pytest.mark.parametrize("bad", ["", "ws://x", "x:notaport", "x:0", "user@"])
def test_bad_broker_address(bad: str) -> None:
    with pytest.raises(ValueError, match="broker"):
        BrokerAddress.parse(bad)


def test_topics() -> None:
    t = Topics("lab")
    assert t.board("pi-3", "status") == "lab/boards/pi-3/status"
    assert t.parse("lab/boards/pi-3/health") == ("pi-3", "health")
    assert t.parse("other/boards/pi-3/health") is None
    with pytest.raises(ValueError, match="topic level"):
        t.board("a/b", "status")


def test_backoff_is_jittered_exponential_and_capped() -> None:
    pytest.importorskip("aiomqtt", reason="the mqtt extra is not installed")
    from bridge.mqtt.presence import backoff_delay

    assert backoff_delay(0, 0.5, 30) == 0.5
    for attempt in range(1, 40):
        d = [backoff_delay(attempt, 0.5, 30) for _ in range(50)]
        assert all(0.5 <= x <= min(30, 0.5 * 2**attempt) for x in d)
    assert len({round(backoff_delay(8, 0.5, 30), 6) for _ in range(20)}) > 1  # jitter

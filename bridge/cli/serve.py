"""``busbridge serve``: a board's buses on the network, announced on MQTT if asked.

The command only reads options and prints; the server (:mod:`bridge.server`)
serves, and :mod:`bridge.mqtt.announce` runs the board's presence beside it.
Heavy imports wait until the command runs, so ``busbridge --help`` stays quick.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import click

from protocol.limits import MAX_TIMEOUT_MS

from .. import env, logs
from ..runtime import run
from .common import CONTEXT, CliError, ConfigError, errmsg, hostport, need_aiomqtt

METRICS_HINT = "pip install 'busbridge[metrics]'"

if TYPE_CHECKING:
    from ..config import Board, MqttSettings
    from ..mqtt.presence import Presence
    from ..server.metrics import MetricsServer


@click.command(context_settings=CONTEXT)
@click.option("--config", "config_path", metavar="BOARD.TOML", default=None,
              help="Board description; default: the built-in simulated board.")
@click.option("--listen", metavar="HOST:PORT", default=None, envvar=env.LISTEN,
              show_envvar=True,
              help="Address to listen on (port 0: any free port); default: the board "
                   "file's [server] listen, else 127.0.0.1:7707.")
@click.option("--request-timeout", type=click.IntRange(1, MAX_TIMEOUT_MS), metavar="MS",
              default=None, help="Deadline of a request without its own; default: the "
                                 "board file's [server] request_timeout_ms, else 1000.")
@click.option("--broker", metavar="[mqtt[s]://]HOST[:PORT]", default=None,
              help="Announce the board on this MQTT broker (overrides [mqtt] broker).")
@click.option("--advertise", metavar="HOST:PORT[,HOST:PORT...]", default=None,
              help="Address clients should dial, as announced (overrides [mqtt] advertise); "
                   "several for clients on different networks, the first a client can "
                   "resolve is dialled.")
@click.option("--tls-cert", "cert", metavar="PEM", default=None,
              help="Server certificate (chain); default: the board file's [server.tls] cert.")
@click.option("--tls-key", "key", metavar="PEM", default=None, help="Key of --tls-cert.")
@click.option("--tls-client-ca", "client_ca", metavar="PEM", default=None,
              help="Require client certificates signed by this CA (mutual TLS).")
@click.option("--metrics", metavar="HOST:PORT", default=None, envvar=env.METRICS,
              show_envvar=True,
              help="Serve Prometheus metrics on http://HOST:PORT/metrics (port 0: any free "
                   "port); default: the board file's [server] metrics, else none.")
@click.option("--insecure", is_flag=True, default=False,
              help="Allow a non-loopback --listen without authentication (trusted networks "
                   "only).")
@click.option("--replay", metavar="FILE", default=None,
              help="Serve a recording instead of a board: every recorded bus as a replay "
                   "bus (docs/record.md); not with --config.")
@click.option("--replay-mode", type=click.Choice(["strict", "lenient"]), default="strict",
              show_default=True, help="How --replay answers.")
@click.option("--record", metavar="FILE", default=None,
              help="Write every transaction the board executes to FILE (a recording a "
                   "replay bus serves back; docs/record.md).")
@click.option("--record-max-mb", type=click.IntRange(1), metavar="MB", default=1024,
              show_default=True, help="Stop recording (and keep serving) at this size.")
def serve(config_path: str | None, listen: str | None, request_timeout: int | None,
          broker: str | None, advertise: str | None, cert: str | None, key: str | None,
          client_ca: str | None, metrics: str | None, insecure: bool, replay: str | None,
          replay_mode: str, record: str | None, record_max_mb: int) -> None:
    """Serve a board's buses until SIGINT/SIGTERM, then finish in-flight requests and exit.

    With a broker ([mqtt] in the board file, or --broker) the board announces
    itself: retained status/inventory/health, offline through its last will.
    A non-loopback --listen needs authentication (client certificates or tokens,
    see docs/security.md) or --insecure.
    """
    import ssl

    from ..addresses import parse_host_port
    from ..compiled import build_status
    from ..config import BoardConfigError, load_board, replay_board
    from ..mqtt.announce import serve_announced
    from ..server import Server
    from ..server import serve as serve_board
    from ..server.auth import InsecureListenError, is_loopback
    from ..server.record import RecordError
    from ..server.settings import server_policy

    if listen is not None:
        try:
            host, port = parse_host_port(listen)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--listen") from None
    if replay is not None and config_path is not None:
        raise click.UsageError("--replay serves a recording's buses: give it or --config, "
                               "not both")
    if metrics is not None:
        try:
            parse_host_port(metrics)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--metrics") from None
    try:
        board = (replay_board(replay, replay_mode) if replay is not None
                 else load_board(config_path))
    except BoardConfigError as e:
        raise ConfigError(str(e)) from None
    if listen is None:
        host, port = board.server.host, board.server.port
    try:
        announce = _mqtt_settings(board, broker, advertise)
    except click.ClickException:
        board.close()
        raise
    timeout_s = (request_timeout / 1000 if request_timeout is not None
                 else board.server.request_timeout)
    try:
        policy = server_policy(board.server, board.source, cert=cert, key=key,
                               client_ca=client_ca, insecure=insecure)
    except (ValueError, OSError, ssl.SSLError) as e:
        board.close()
        raise ConfigError(f"TLS: {errmsg(e)}") from None

    exporter = _metrics(metrics or board.server.metrics, board)

    def ready(server: Server) -> None:
        if exporter is not None:
            exporter.attach(server.stats, board.name)
            where = f"http://{hostport(exporter.host, exporter.port)}/metrics"
            logs.say(f"metrics on {where}", metrics=where)
        buses = f"i2c: {', '.join(board.i2c) or '-'}; spi: {', '.join(board.spi) or '-'}"
        listen = hostport(server.host, server.port)
        logs.say(f"serving board {board.name!r} on {listen} ({buses})", board=board.name,
                 listen=listen)
        if record is not None:
            logs.say(f"recording every transaction to {record}", record=record)
        sec = server.security
        auth = [x for x, on in (("client certificates", sec.client_certs),
                                ("tokens", bool(sec.tokens))) if on]
        rules = len(server.acl.rules) if server.acl else 0
        logs.say(f"{'TLS' if sec.ssl else 'no TLS'}; authentication: "
                 f"{' or '.join(auth) or 'none'}"
                 + (f"; access rules: {rules}" if server.acl else ""),
                 tls=sec.ssl is not None, authentication=auth, access_rules=rules)
        build = build_status()
        logs.say(build.summary(), hot_path=build.state)
        if not auth and not is_loopback(server.host):
            logs.say("no authentication (insecure): anyone who can reach this port can "
                     "drive the buses", logging.WARNING)

    try:
        run(serve_announced(announce, board.description, lambda on_ready: serve_board(
            board, host=host, port=port, policy=policy, request_timeout=timeout_s,
            ready=on_ready, max_lease_ttl=board.server.lease_max_ttl_s, record=record,
            record_max_bytes=record_max_mb << 20), ready, _announced))
    except InsecureListenError as e:
        board.close()
        raise ConfigError(str(e)) from None
    except RecordError as e:
        board.close()
        raise CliError(str(e.strerror)) from None
    except OSError as e:
        board.close()
        raise CliError(f"cannot listen on {hostport(host, port)}: {errmsg(e)}") from None
    finally:
        if exporter is not None:
            exporter.close()


def _metrics(spec: str | None, board: Board) -> MetricsServer | None:
    """The Prometheus endpoint, bound now so a bad address stops us before serving."""
    if spec is None:
        return None
    from ..addresses import parse_host_port

    host, port = parse_host_port(spec)
    try:
        from ..server.metrics import MetricsServer
    except ImportError:
        board.close()
        raise CliError(f"--metrics needs the Prometheus client: {METRICS_HINT}") from None
    try:
        return MetricsServer(host, port)
    except OSError as e:
        board.close()
        raise CliError(f"cannot listen on {hostport(host, port)} for metrics: "
                       f"{errmsg(e)}") from None


def _mqtt_settings(board: Board, broker: str | None, advertise: str | None
                   ) -> MqttSettings | None:
    """The board file's ``[mqtt]`` with ``--broker/--advertise`` applied, or None; usage errors."""
    from ..mqtt.announce import announce_settings

    if board.mqtt is None and broker is None:
        if advertise is not None:
            raise click.UsageError("--advertise needs a broker (--broker or [mqtt] broker)")
        return None
    try:
        settings = announce_settings(board.name, board.mqtt, broker, advertise)
    except (ValueError, OSError) as e:
        raise click.UsageError(f"MQTT settings: {e}") from None
    need_aiomqtt("announcing the board on MQTT ([mqtt] in the board file, or --broker)")
    return settings


def _announced(p: Presence) -> None:
    logs.say(f"announcing {p.server.board.name!r} as {', '.join(p.addresses)} on MQTT "
             f"broker {p.broker} (topics {p.topic('+')})", addresses=p.addresses,
             broker=str(p.broker))

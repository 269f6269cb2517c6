"""``busbridge token``: make access tokens and the hashes a board file stores."""

from __future__ import annotations

import os
import sys

import click

from .. import logs
from ..server.auth import hash_token, new_token
from .common import CliError


def _snippet(name: str, token: str) -> str:
    return f'[[server.tokens]]\nname = "{name}"\nhash = "{hash_token(token)}"'


@click.group("token", context_settings={"help_option_names": ["-h", "--help"]})
def token() -> None:
    """Access tokens: the client keeps the token, the board file only its salted hash."""


@token.command("new")
@click.option("--name", required=True, help="Client name (what access rules and logs use).")
@click.option("--token-file", "path", metavar="FILE", default=None,
              help="Write the token to FILE (mode 0600) instead of stdout.")
def new(name: str, path: str | None) -> None:
    """Make a random token; print it and the board-file lines that accept it."""
    tok = new_token()
    if path:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise CliError(f"{path} already exists: not overwritten (a token in use may be "
                           "in it); remove it first or choose another --token-file") from None
        except OSError as e:
            raise CliError(f"cannot create {path}: {e.strerror or e}") from None
        with os.fdopen(fd, "w") as f:
            f.write(tok + "\n")
        logs.say(f"token written to {path}")
    else:
        click.echo(tok)
    click.echo("# board file ([server] section):", err=True)
    click.echo(_snippet(name, tok), err=True)


@token.command("hash")
@click.option("--name", required=True, help="Client name (what access rules and logs use).")
def hash_(name: str) -> None:
    """Read a token from stdin; print the board-file lines that accept it."""
    tok = sys.stdin.readline().strip()
    if not tok:
        raise click.UsageError("no token on stdin")
    click.echo(_snippet(name, tok))

"""Field types every board-file model shares.

A board file is hand-written, so numbers come as TOML gives them or as the
strings people copy from datasheets ("0x50", "1_000"); one parser for all of
them keeps the error wording the same wherever a number is wrong.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field

from protocol.limits import MAX_BUS_NAME

#: Every model: unknown keys are errors (a typo must not pass silently), values immutable.
STRICT = ConfigDict(extra="forbid", frozen=True)


def parse_int(v: Any) -> Any:
    """Ints as TOML gives them, plus "0x50"-style strings (TOML keys are always strings)."""
    if isinstance(v, bool):
        raise ValueError("expected an integer, not a boolean")
    if isinstance(v, str):
        text = v.strip().replace("_", "")
        try:
            return int(text, 0)
        except ValueError:
            try:
                return int(text, 10)  # "08": int(.., 0) refuses leading zeros
            except ValueError:
                raise ValueError(f"{v!r} is not an integer") from None
    return v


def _name_str(v: Any) -> Any:
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


def _parse_bytes(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return list(bytes.fromhex(v.replace(":", " ")))
        except ValueError:
            raise ValueError(f"{v!r} is not hex bytes (e.g. 'ef 40 16')") from None
    return v


Int = Annotated[int, BeforeValidator(parse_int)]
U8 = Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=0xFF)]
U32 = Annotated[int, BeforeValidator(parse_int), Field(ge=0, le=0xFFFF_FFFF)]
NonNegInt = Annotated[int, BeforeValidator(parse_int), Field(ge=0)]
Seconds = Annotated[float, Field(ge=0, le=3600)]
BusName = Annotated[str, BeforeValidator(_name_str), Field(min_length=1, max_length=MAX_BUS_NAME)]
#: A byte string as a list of ints or a hex string ("ef 40 16").
HexBytes = Annotated[list[U8], BeforeValidator(_parse_bytes)]

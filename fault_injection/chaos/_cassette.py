"""The cassette file, now part of the product: `trio_mesa._cassette` (public from
``trio_mesa``). Re-exported here so the chaos server's proxy and ``--replay``, and code
that imported it from here, keep working unchanged."""

from trio_mesa._cassette import (
    ABANDONED_STATUS,
    FORMAT,
    KEPT_HEADERS,
    MAX_HEADER_VALUE,
    VERSION,
    Cassette,
    CassetteError,
    CassetteWriter,
    Exchange,
    header_value_ok,
    kept_headers,
)

__all__ = [
    "ABANDONED_STATUS",
    "FORMAT",
    "KEPT_HEADERS",
    "MAX_HEADER_VALUE",
    "VERSION",
    "Cassette",
    "CassetteError",
    "CassetteWriter",
    "Exchange",
    "header_value_ok",
    "kept_headers",
]

"""Redis URLs: parsed and checked before anything connects, and redacted wherever they
are shown. A password never leaves this module except to the Redis client itself.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .._checks import shown

__all__ = ["RedisURL", "parse_redis_url", "redact_url"]

_SCHEMES = ("redis", "rediss")
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_cert_reqs", "ssl_check_hostname")
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


@dataclass(frozen=True, slots=True, repr=False)
class RedisURL:
    """A checked ``redis://`` or ``rediss://`` URL. Its repr and str are redacted
    (`redacted`); the password is only in `password`, which nothing prints."""

    scheme: str
    host: str
    port: int
    db: int
    username: str | None
    password: str | None = field(compare=False)
    tls_options: tuple[tuple[str, str], ...] = ()

    @property
    def tls(self) -> bool:
        """Whether it is ``rediss://``: TLS to the server."""
        return self.scheme == "rediss"

    @property
    def redacted(self) -> str:
        """The URL with its password shown as ``***``."""
        user = quote(self.username, safe="") if self.username else ""
        auth = f"{user}:***@" if self.password is not None else (f"{user}@" if user else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = "&".join(f"{k}={v}" for k, v in self.tls_options)
        tail = f"?{query}" if query else ""
        return f"{self.scheme}://{auth}{host}:{self.port}/{self.db}{tail}"

    def __repr__(self) -> str:
        return f"RedisURL({self.redacted!r})"

    __str__ = __repr__

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``rediss://`` (``None`` for ``redis://``): the system's
        CAs, or ``ssl_ca_certs``; ``ssl_cert_reqs=none`` skips verification."""
        if not self.tls:
            return None
        options = dict(self.tls_options)
        context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
        reqs = _CERT_REQS[options.get("ssl_cert_reqs", "required")]
        check = options.get("ssl_check_hostname", "true" if reqs != ssl.CERT_NONE else "false")
        context.check_hostname = check == "true"
        context.verify_mode = reqs
        return context

    def hide(self, text: str) -> str:
        """``text`` with this URL's password (raw or percent-encoded) replaced by ``***``."""
        if self.password:
            for form in {self.password, quote(self.password, safe=""), quote(self.password)}:
                text = text.replace(form, "***")
        return text


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (best effort for a URL that does not
    parse: everything between ``://`` and the last ``@`` is hidden)."""
    try:
        return parse_redis_url(url).redacted
    except (TypeError, ValueError):
        return redact_url_loosely(str(url))


def parse_redis_url(url: object) -> RedisURL:
    """Check ``url`` and split it up.

    Accepted: ``redis://[[user]:password@]host[:port][/db]`` and the same with
    ``rediss://`` (TLS), which also takes ``?ssl_ca_certs=PATH``,
    ``ssl_cert_reqs=none|optional|required`` and ``ssl_check_hostname=true|false``.

    Raises:
        TypeError: not a str.
        ValueError: anything else (a misspelled scheme, no host, a bad port or db, an
            unknown option), with the URL redacted in the message.
    """
    if not isinstance(url, str):
        raise TypeError(f"a Redis URL must be a str, not {type(url).__name__}")
    shown_url = redact_url_loosely(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # urlsplit's message may quote part of the password: not shown.
        raise ValueError(
            f"not a Redis URL (its host or port does not parse): {shown_url}"
        ) from None
    if parts.scheme not in _SCHEMES:
        raise ValueError(
            f"a Redis URL starts with redis:// or rediss:// (TLS), not {shown(parts.scheme + ':')}"
            f": {shown_url}"
        )
    if not parts.hostname:
        raise ValueError(f"a Redis URL needs a host: {shown_url}")
    if parts.fragment:
        raise ValueError(f"a Redis URL has no #fragment: {shown_url}")
    path = parts.path.strip("/")
    if path and not (path.isdigit() and int(path) < 2**31):
        raise ValueError(f"a Redis URL's path is a database number (/0), not /{path}: {shown_url}")
    options = parse_qsl(parts.query, keep_blank_values=True)
    for key, value in options:
        if key not in _TLS_OPTIONS or parts.scheme != "rediss":
            allowed = ", ".join(_TLS_OPTIONS)
            raise ValueError(
                f"unknown Redis URL option {shown(key)} (rediss:// takes {allowed}): {shown_url}"
            )
        if key == "ssl_cert_reqs" and value not in _CERT_REQS:
            raise ValueError(f"ssl_cert_reqs is none, optional or required: {shown_url}")
        if key == "ssl_check_hostname" and value not in ("true", "false"):
            raise ValueError(f"ssl_check_hostname is true or false: {shown_url}")
    return RedisURL(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or 6379,
        db=int(path or 0),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls_options=tuple(options),
    )


def redact_url_loosely(url: str) -> str:
    """Hide everything between ``://`` and the last ``@`` (for a URL not yet parsed)."""
    head, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return f"{head}://***@{rest.rpartition('@')[2]}"
    if not sep and "@" in url:
        return "***@" + url.rpartition("@")[2]
    return url

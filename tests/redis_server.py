"""A real ``redis-server`` for the store tests: started on a free loopback port with no
persistence, waited for until it answers PING, stopped after. No fakes: the scripts
must run where they will run. ``make test`` installs Debian's package where missing.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1: `url` to reach it, `kill` to lose it."""

    def __init__(
        self,
        *,
        password: str | None = None,
        tls: tuple[Path, Path] | None = None,
        port: int | None = None,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed: run `make test` (it installs Debian's "
                "redis-server) or `apt-get install -y redis-server`",
                pytrace=False,
            )
        self.port = port or free_port()
        self.password = password
        self.tls = tls
        args = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        if tls is None:
            args += ["--port", str(self.port)]
        else:
            cert, key = tls
            args += ["--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            args += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
        if password is not None:
            args += ["--requirepass", password]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._wait_until_up()

    @property
    def url(self) -> str:
        """``redis://`` (or ``rediss://``) with the password, if any."""
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
                sock: socket.socket | ssl.SSLSocket = raw
                if self.tls:
                    context = ssl.create_default_context(cafile=str(self.tls[0]))
                    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        # Up: +PONG, or -NOAUTH when a password is required.
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                pytest.fail(f"redis-server exited at start:\n{out}", pytrace=False)
            if self._ping():
                return
            time.sleep(0.01)
        self.kill()
        pytest.fail("redis-server did not answer PING within 10 s", pytrace=False)

    def kill(self) -> None:
        """Kill it (SIGKILL) and wait until it is gone: the port refuses connections."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with ``cryptography``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "redis.crt", directory / "redis.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def budget_worker(url: str, name: str, limit: int, amounts: Sequence[int], batch: int) -> int:
    """Run in a spawned process: reserve ``amounts`` from budget ``name`` in batches of
    ``batch``, settle each granted one at its reserved amount; return the micro-dollars
    this process was granted."""
    import trio

    from trio_mesa._stores import BudgetLimits, RedisStore, Settlement, Spend

    async def main() -> int:
        granted_total = 0
        limits = BudgetLimits(max_micro_usd=limit)
        async with RedisStore(url, workers=4) as store:
            for i in range(0, len(amounts), batch):
                spends = [Spend(a) for a in amounts[i : i + batch]]
                grant = await store.budget_reserve(name, limits, spends)
                done = [s for s, ok in zip(spends, grant.granted, strict=True) if ok]
                if done:
                    await store.budget_settle(name, [Settlement(s, s) for s in done])
                granted_total += sum(s.micro_usd for s in done)
        return granted_total

    return trio.run(main)


def rate_worker(url: str, name: str, batches: int, batch: int) -> list[float]:
    """Run in a spawned process: ``batches`` reservations of ``batch`` slots each from
    one slow quota (1000 s a slot); return every offset this process was given."""
    import trio

    from trio_mesa._stores import Quota, RedisStore

    async def main() -> list[float]:
        offsets: list[float] = []
        async with RedisStore(url, workers=4) as store:
            for _ in range(batches):
                grant = await store.rate_reserve(name, Quota(1, per=1000), [1] * batch)
                offsets += grant.offsets
        return offsets

    return trio.run(main)

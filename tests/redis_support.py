"""A real ``redis-server`` for tests: started on a free loopback port in a temp dir.

CI installs ``redis-server``; a missing binary is a setup error, not a skip.
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import redis

__all__ = ["RedisServer", "fresh_key", "redis_client", "redis_server", "redis_srv"]


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary() -> str:
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if path is None:
        raise RuntimeError(
            "redis-server is not installed; the Redis limiter tests need a real server: "
            "run `apt-get install redis-server` (or put redis-server on PATH)"
        )
    return path


@contextmanager
def redis_server(*, startup_timeout: float = 10.0) -> Iterator[RedisServer]:
    """Run ``redis-server`` (no persistence) on 127.0.0.1 for the duration of the block."""
    binary = _binary()
    with tempfile.TemporaryDirectory(prefix="tokenguard-redis-") as tmp:
        for _attempt in range(5):
            port = _free_port()
            proc = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    tmp,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "yes",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + startup_timeout
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2) as c:
                        c.sendall(b"PING\r\n")
                        if c.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    time.sleep(0.02)
            else:
                proc.kill()
                proc.wait()
                continue  # the port was taken meanwhile, or the server did not start
            try:
                yield RedisServer("127.0.0.1", port, proc)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            return
        raise RuntimeError(f"redis-server ({binary}) did not start on a free loopback port")


@pytest.fixture(scope="session")
def redis_srv() -> Iterator[RedisServer]:
    """A session's ``redis-server`` (import this fixture into a test module to use it)."""
    with redis_server() as server:
        yield server


@pytest.fixture(scope="module", name="client")
def redis_client(redis_srv: RedisServer) -> Iterator[redis.Redis]:
    """A client of the session's server, as ``client`` in the modules that import it
    (there it is Redis, not ``conftest``'s SDK client of an emulator)."""
    c = redis.Redis(host=redis_srv.host, port=redis_srv.port)
    yield c
    c.close()


@pytest.fixture(name="key")
def fresh_key() -> str:
    """A key no other test uses, as ``key`` in the modules that import it."""
    return f"t-{uuid.uuid4().hex[:8]}"


@contextmanager
def uncollected() -> Iterator[None]:
    """No garbage collection inside: a test that times a wait to the millisecond times the
    limiter, not a full collection of the suite's heap (80-200 ms on a loaded machine)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()

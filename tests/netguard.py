"""Fixtures that make network failures real and local: an offline resolver, a refusing port, no proxies.

Tests of "no network" must not depend on the machine's network, and must send nothing off it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def offline_dns(monkeypatch: pytest.MonkeyPatch, no_proxy_env: None) -> list[str]:
    """The resolver of a machine without network: loopback resolves, every other name fails as glibc says
    (EAI_NONAME). Nothing is looked up off the machine, whatever its DNS is. Returns the names asked for."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        name = host.decode() if isinstance(host, bytes) else str(host)
        asked.append(name)
        if name in ("127.0.0.1", "localhost", "::1"):
            return real(host, *args, **kwargs)  # type: ignore[arg-type]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that is bound but never listens: connections are refused, and no one else takes it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()

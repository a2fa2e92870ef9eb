"""Resumable, verified HTTP downloads of large files over flaky links.

``fetch`` streams into ``<dest>.part`` and renames it to ``dest`` only when the size (and sha256 when
known) is right. An interrupted transfer resumes with ``Range: bytes=<n>-``; a 206 is accepted only
when its ``Content-Range`` starts exactly at ``n`` (and the total matches), a 200 restarts the file
cleanly, a 416 means "check what we have". Resets, timeouts and 5xx are retried with exponential
backoff; a size mismatch is fatal. A host whose name does not resolve or that refuses the connection
before it ever answered is not a flaky link but no network, a typo or a proxy problem: that fails at
once with :class:`~vggtctl.errors.HostUnreachableError` (waiting minutes for it helps nobody). Ctrl-C
leaves the ``.part`` file for the next run.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from vggtctl.errors import DiskSpaceError, DownloadError, HostUnreachableError
from vggtctl.utils.hashing import sha256_file

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
_UNSATISFIED_RANGE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$")
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class Cancelled(KeyboardInterrupt):
    """The transfer was cancelled (Ctrl-C in another thread); the ``.part`` file is kept for resuming."""


@dataclass
class FetchResult:
    """What :func:`fetch` did.

    Attributes:
        path: the final file.
        bytes: its size.
        sha256: hex digest (None when not computed: ``verify=False``).
        resumed_from: bytes already on disk when the first request was sent.
        attempts: HTTP requests made.
        restarts: times the partial file had to be discarded (200 to a Range request, bad Content-Range).
        cached: the final file was already there.
    """

    path: Path
    bytes: int
    sha256: str | None
    resumed_from: int = 0
    attempts: int = 0
    restarts: int = 0
    cached: bool = False


@dataclass
class RetryPolicy:
    """Retries for connection errors, timeouts and 5xx: ``backoff * 2**k`` seconds, capped.

    ``retries`` counts consecutive failures without progress; a failure after new bytes arrived resets it.
    """

    retries: int = 8
    backoff: float = 1.0
    max_backoff: float = 30.0
    timeout: tuple[float, float] = (15.0, 60.0)

    def delay(self, failures: int) -> float:
        return min(self.max_backoff, self.backoff * (2 ** max(0, failures - 1)))


def part_path(dest: Path) -> Path:
    """Where the partial download of ``dest`` lives."""
    return dest.with_name(dest.name + ".part")


def head_size(
    url: str, session: requests.Session | None = None, timeout: tuple[float, float] = (15.0, 60.0)
) -> int | None:
    """``Content-Length`` of ``url`` from a HEAD request (redirects followed), None when not given.

    Raises:
        DownloadError: the server answered with an error status or could not be reached.
    """
    s = session or requests.Session()
    try:
        r = s.head(url, allow_redirects=True, timeout=timeout)
    except requests.RequestException as e:
        unreachable = host_unreachable(e, url, s)
        if unreachable is not None:
            raise unreachable from None
        raise DownloadError(
            f"HEAD {url} failed: {_reason(e)}", "check the network or the --base-url mirror"
        ) from e
    if r.status_code >= 400:
        raise DownloadError(f"HEAD {url} answered HTTP {r.status_code}", _status_hint(r.status_code))
    cl = r.headers.get("Content-Length")
    return int(cl) if cl is not None and cl.isdigit() else None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: causes, contexts, urllib3's ``reason`` and exceptions passed as arguments
    (requests: ConnectionError -> MaxRetryError -> NewConnectionError -> ConnectionRefusedError)."""
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        e = stack.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack.extend([e.__cause__, e.__context__, getattr(e, "reason", None), *e.args])


def unreachable_kind(exc: BaseException) -> str | None:
    """``"dns"`` or ``"refused"`` when ``exc`` or anything it wraps is a name-resolution failure or a
    refused connection; None for resets, timeouts and the rest."""
    for e in _chain(exc):
        if isinstance(e, (socket.gaierror, urllib3.exceptions.NameResolutionError)):
            return "dns"
        if isinstance(e, ConnectionRefusedError):
            return "refused"
    return None


_REASONS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    ((socket.gaierror, urllib3.exceptions.NameResolutionError), "the host name does not resolve"),
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "connection reset by the server"),
    ((TimeoutError, requests.Timeout, urllib3.exceptions.TimeoutError), "timed out"),
)


def _reason(exc: BaseException) -> str:
    """What went wrong, in a few words: requests' reprs of nested urllib3 errors run to kilobytes."""
    if isinstance(exc, _Retryable):
        return str(exc)
    chain = list(_chain(exc))
    for kinds, text in _REASONS:
        if any(isinstance(e, kinds) for e in chain):
            return text
    return _short(exc)


def host_unreachable(
    exc: BaseException, url: str, session: requests.Session | None = None
) -> HostUnreachableError | None:
    """The short error for a DNS or connection-refused failure of ``url`` (through its proxy, when one is set),
    None when ``exc`` is another kind of failure."""
    kind = unreachable_kind(exc)
    if kind is None:
        return None
    parts = urlsplit(url)
    proxies = dict(requests.utils.get_environ_proxies(url))
    if session is not None:
        proxies.update(session.proxies or {})
    proxy = requests.utils.select_proxy(url, proxies)
    if proxy:
        p = urlsplit(proxy if "://" in proxy else "http://" + proxy)
        where = f"the proxy {p.hostname}:{p.port or 80} (for {parts.hostname})"
    else:
        where = f"{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        p = parts
    if kind == "dns":
        what = f"cannot resolve the host name of {where}: no network, no DNS, or a typo"
    else:
        port = p.port or (443 if p.scheme == "https" else 80)
        what = f"{where} refused the connection on port {port}: nothing listens there, or a firewall says no"
    return HostUnreachableError(
        what,
        "check the network (`ping`, `curl -I` the URL); behind a proxy set HTTPS_PROXY / HTTP_PROXY "
        "(NO_PROXY for local mirrors); or use a reachable mirror",
    )


def _short(e: BaseException, limit: int = 200) -> str:
    """One line of an exception's text: requests' reprs of nested urllib3 errors run to kilobytes."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _status_hint(status: int) -> str:
    if status == 404:
        return "the archive does not exist on this server: check the scene/kind names or --base-url"
    if status in (401, 403):
        return "the server refused access: check --base-url"
    return "try again later or use a mirror with --base-url"


def fetch(
    url: str,
    dest: str | os.PathLike[str],
    *,
    expected_bytes: int | None = None,
    expected_sha256: str | None = None,
    verify: bool = True,
    session: requests.Session | None = None,
    policy: RetryPolicy | None = None,
    on_bytes: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
    chunk_size: int = CHUNK,
) -> FetchResult:
    """Download ``url`` to ``dest`` through ``dest.part`` with resume, retries and verification.

    Args:
        url: what to fetch.
        dest: final path; its parent is created.
        expected_bytes: the size the file must have (a different ``Content-Length`` is fatal).
        expected_sha256: checked when ``verify`` (a mismatch deletes the partial file).
        verify: compute the sha256 (and check it when expected).
        session: a requests session (one per thread).
        policy: retry/backoff/timeouts.
        on_bytes: called with every newly stored byte count (progress); negative after a restart.
        cancel: when set, stop at the next chunk and raise :class:`Cancelled` (the ``.part`` is kept).
        chunk_size: read size.

    Returns:
        A :class:`FetchResult`.

    Raises:
        DownloadError: HTTP error status, size or sha256 mismatch, or retries exhausted.
        DiskSpaceError: the disk filled up while writing.
        Cancelled: ``cancel`` was set.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    policy = policy or RetryPolicy()
    s = session or requests.Session()
    notify = on_bytes or (lambda n: None)

    if dest.exists():
        size = dest.stat().st_size
        if expected_bytes is None or size == expected_bytes:
            digest = sha256_file(dest) if verify else None
            if expected_sha256 and digest and digest != expected_sha256.lower():
                dest.unlink()
                raise DownloadError(
                    f"{dest.name}: sha256 {digest} does not match the expected {expected_sha256}; deleted it",
                    "re-run the same command to download it again",
                )
            return FetchResult(dest, size, digest, resumed_from=size, cached=True)
        dest.unlink()  # a wrong-size final file is never trusted

    hasher = hashlib.sha256() if verify else None
    have = part.stat().st_size if part.exists() else 0
    if expected_bytes is not None and have > expected_bytes:
        part.unlink()
        have = 0
    if hasher is not None and have:
        _hash_prefix(part, hasher, have)
    resumed_from = have
    attempts = restarts = failures = 0
    answered = False  # the server answered once: later DNS/refused failures are an outage worth waiting for
    total = expected_bytes

    def restart() -> None:
        nonlocal have, hasher, restarts
        if have:
            notify(-have)
        with open(part, "wb"):
            pass
        have = 0
        restarts += 1
        hasher = hashlib.sha256() if verify else None

    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled {dest.name}")
        if total is not None and have == total:
            break
        headers = {"Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        attempts += 1
        progressed = False
        try:
            with s.get(url, headers=headers, stream=True, timeout=policy.timeout, allow_redirects=True) as r:
                answered = True
                status = r.status_code
                if status == 416:
                    m = _UNSATISFIED_RANGE.match(r.headers.get("Content-Range", ""))
                    server_total = int(m.group(1)) if m else None
                    if server_total is not None and server_total == have and total in (None, have):
                        total = have
                        break
                    log.info("%s: 416 with %s bytes on disk, restarting", dest.name, have)
                    restart()
                    continue
                if status in _RETRY_STATUS:
                    raise _Retryable(f"HTTP {status}")
                if status >= 400:
                    raise DownloadError(f"GET {url} answered HTTP {status}", _status_hint(status))
                if status == 206 and have:
                    m = _CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
                    start = int(m.group(1)) if m else -1
                    srv_total = int(m.group(3)) if m and m.group(3) != "*" else None
                    if start != have or (total is not None and srv_total is not None and srv_total != total):
                        log.info("%s: Content-Range %r does not continue at %d; restarting", dest.name,
                                 r.headers.get("Content-Range"), have)  # fmt: skip
                        restart()
                        continue
                    if total is None and srv_total is not None:
                        total = srv_total
                    mode = "ab"
                elif status == 200:
                    if have:
                        log.info("%s: server ignored Range (HTTP 200); restarting from 0", dest.name)
                        restart()
                    length = r.headers.get("Content-Length")
                    if length is not None and length.isdigit():
                        if total is not None and int(length) != total:
                            raise DownloadError(
                                f"{dest.name}: the server sends {int(length)} bytes, expected {total}",
                                "the archive changed on the server or the mirror is broken; "
                                "check --base-url / --manifest (sizes are pinned on purpose)",
                            )
                        total = int(length)
                    mode = "wb"
                else:
                    raise _Retryable(f"unexpected HTTP {status}")
                with open(part, mode) as f:
                    # read1 hands over every byte that arrived before a connection drop, so a resume
                    # continues exactly where the data stopped (iter_content would drop a partial chunk)
                    while block := r.raw.read1(chunk_size):
                        if total is not None and have + len(block) > total:
                            raise _Retryable("server sent more bytes than announced")
                        _write(f, block, part)
                        if hasher is not None:
                            hasher.update(block)
                        have += len(block)
                        progressed = True
                        notify(len(block))
                        if cancel is not None and cancel.is_set():  # after storing what already arrived
                            raise Cancelled(f"cancelled {dest.name}")
            if total is None:
                total = have  # no length announced: EOF is the end
                break
            if have < total:
                raise _Retryable(f"connection closed at {have} of {total} bytes")
        except (
            _Retryable,
            requests.RequestException,
            urllib3.exceptions.HTTPError,
            ConnectionError,
            TimeoutError,
        ) as e:
            unreachable = None if answered else host_unreachable(e, url, s)
            if unreachable is not None:
                raise unreachable from None
            failures = 1 if progressed else failures + 1
            if isinstance(e, _Retryable) and "more bytes" in str(e):
                restart()
            if failures > policy.retries:
                raise DownloadError(
                    f"{dest.name}: giving up after {attempts} attempts ({have} of {total or '?'} bytes): {_reason(e)}",
                    "re-run the same command: the download resumes from the .part file",
                ) from None
            delay = policy.delay(failures)
            log.info("%s: %s; retry %d/%d in %.1fs", dest.name, _reason(e), failures, policy.retries, delay)
            if cancel is not None:
                if cancel.wait(delay):
                    raise Cancelled(f"cancelled {dest.name}") from None
            else:
                time.sleep(delay)

    if total is not None and have != total:
        raise DownloadError(f"{dest.name}: got {have} bytes, expected {total}", "re-run the same command")
    digest = hasher.hexdigest() if hasher is not None else None
    if digest is not None and expected_sha256 and digest != expected_sha256.lower():
        part.unlink()
        raise DownloadError(
            f"{dest.name}: sha256 {digest} does not match the expected {expected_sha256}; deleted the download",
            "re-run the same command to download it again; if it repeats, the server's file changed "
            "(--no-verify accepts it)",
        )
    # no fsync: the archive is transient and every consumer re-verifies it (size on each run, sha256
    # when reused, 7z CRCs on extraction); an fsync would cost ~30 % of loopback throughput
    os.replace(part, dest)
    return FetchResult(dest, have, digest, resumed_from=resumed_from, attempts=attempts, restarts=restarts)


class _Retryable(Exception):
    pass


def _write(f: Any, block: bytes, part: Path) -> None:
    try:
        f.write(block)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskSpaceError(
                f"the disk is full while writing {part} ({e.strerror})",
                "free space and re-run the same command: the download resumes from the .part file",
            ) from e
        raise


def _hash_prefix(part: Path, hasher: Any, size: int) -> None:
    with open(part, "rb") as f:
        left = size
        while left > 0:
            block = f.read(min(8 << 20, left))
            if not block:
                break
            hasher.update(block)
            left -= len(block)


def discard_partial(dest: Path) -> None:
    """Remove ``dest`` and its ``.part`` (after a verification failure)."""
    for p in (dest, part_path(dest)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()

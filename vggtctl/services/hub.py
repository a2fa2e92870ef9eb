"""VGGT weights on the Hugging Face Hub: resolve, download (resume and cache are huggingface_hub's job),
verify, and map the Hub's failures to errors that say what to do next.

Settings are read from the environment on every call (not at import, as huggingface_hub's constants
are), so ``HF_HOME``/``HF_HUB_CACHE``, ``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` set after
import still apply.

This module is a leaf of the loader: it resolves repo ids to local files and knows nothing of
checkpoints or models (``model_loader`` composes it with ``checkpoint_io``).

Offline: with ``HF_HUB_OFFLINE`` set only the cache is read. Without it, one TCP connection to the
endpoint (or to the proxy that serves it) is tried first: a name that does not resolve or a refused
connection is not transient, so instead of huggingface_hub's five retries (~24 s) the cache is
read and, when the file is not there, the error names the host at once. Timeouts and resets are
left to huggingface_hub's retries. huggingface_hub's retry warnings are not passed on: each would
print twice (its own handler and the root logger) in front of the one error that matters.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vggtctl.defaults import DEFAULT_REPO
from vggtctl.errors import DownloadError, HostUnreachableError, UsageError
from vggtctl.paths import hf_hub_cache
from vggtctl.progress import NULL_PROGRESS, Progress, Task
from vggtctl.services.hashing import file_sha256

DEFAULT_ENDPOINT = "https://huggingface.co"
# Preference order: safetensors can be memory-mapped and cannot carry code.
WEIGHT_FILENAMES: tuple[str, ...] = ("model.safetensors", "model.pt")

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class HubSettings:
    """The Hub settings in force now, read from the environment."""

    endpoint: str
    cache_dir: Path
    token: str | None
    offline: bool


@dataclass
class WeightsFile:
    """One resolved weights file of a Hub repo.

    Attributes:
        repo: Repo id, e.g. ``facebook/VGGT-1B`` (``None`` for generated weights).
        revision: The revision asked for (branch, tag or commit), ``None`` = ``main``.
        commit: The commit hash it resolved to, when known.
        filename: ``model.safetensors`` or ``model.pt``.
        path: Local path (in the HF cache or ``local_dir``); for a dry run, where it would be.
        size: Size in bytes, when known.
        cached: Whether the file was already local before this call.
        sha256: SHA-256 of the local file (``None`` for a dry run of an uncached file).
        downloaded: Whether bytes were fetched by this call.
        alternatives: Weight files that were not needed because an earlier one exists.
        source: ``"hub"``, or ``"generated"`` for the seeded tiny checkpoint.
    """

    repo: str | None
    revision: str | None
    commit: str | None
    filename: str
    path: Path
    size: int | None
    cached: bool
    sha256: str | None = None
    downloaded: bool = False
    alternatives: list[str] = field(default_factory=list)
    source: str = "hub"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (paths as strings)."""
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def hub_settings() -> HubSettings:
    """Hub endpoint, cache folder, token and offline flag as the environment says right now."""
    return HubSettings(
        endpoint=(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/"),
        cache_dir=hf_hub_cache(),
        token=os.environ.get("HF_TOKEN") or None,
        offline=_truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE")),
    )


def looks_like_repo_id(source: str) -> bool:
    """True for ``owner/name`` strings (the Hub's repo id syntax)."""
    return (
        bool(_REPO_ID.match(source))
        and ".." not in source
        and not source.endswith((".safetensors", ".pt", ".pth"))
    )


# ---------------------------------------------------------------- progress bridge


def _tqdm_bridge(progress: Progress) -> type:
    """A tqdm look-alike class that forwards huggingface_hub's byte counts to ``progress``.

    huggingface_hub instantiates ``tqdm_class(total=..., desc=..., unit=..., ...)`` and calls
    ``update(n)``; defining ``update_transfer`` makes its Xet path report through the same bar,
    which counts only the bytes written (``update``) so nothing is counted twice.
    """

    class _Bridge:
        def __init__(
            self,
            *args: Any,
            total: float | None = None,
            desc: str | None = None,
            initial: float = 0,
            **kwargs: Any,
        ) -> None:
            self.n = initial or 0
            self._total = total
            self._task: Task = progress.task(f"download {desc or ''}".strip(), total=total, unit="B")
            if initial:
                self._task.advance(initial)
            self.format_dict: dict[str, Any] = {}

        @property
        def total(self) -> float | None:
            return self._total

        @total.setter
        def total(self, value: float | None) -> None:
            self._total = value
            self._task.update(total=value)

        def update(self, n: float = 1) -> None:
            self.n += n
            self._task.advance(n)

        def update_transfer(self, n: float = 1) -> None:
            """Network bytes: not counted (``update`` already counts the bytes written)."""

        def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
            """Speed text: the Rich bar computes its own."""

        set_transfer_postfix_str = set_postfix_str

        def refresh(self) -> None:
            """Nothing to redraw: the Rich bar refreshes itself."""

        def close(self) -> None:
            self._task.close()

        def __enter__(self) -> _Bridge:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.close()

    return _Bridge


# ---------------------------------------------------------------- reachability and library logs


def _probe_target(endpoint: str) -> tuple[str, int, str]:
    """(host, port, via) of the first TCP hop to ``endpoint``: the proxy that serves it, or itself."""
    url = urllib.parse.urlsplit(endpoint)
    host = url.hostname or ""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return p.hostname or "", p.port or 80, f" (through the proxy {p.hostname}:{p.port or 80})"
    return host, url.port or (443 if url.scheme == "https" else 80), ""


def unreachable_reason(endpoint: str) -> str | None:
    """Why ``endpoint`` cannot be reached, when that is certain without waiting; else ``None``.

    A name that does not resolve, a refused connection and an unreachable network are answered in
    milliseconds and will not heal within a retry loop. A timeout is not certain: ``None``.
    """
    host, port, via = _probe_target(endpoint)
    try:
        addrs = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"the host name {host} does not resolve: {e.strerror or e}{via}"
    failure: OSError | None = None
    for family, kind, proto, _, addr in addrs[:2]:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(_PROBE_TIMEOUT_S)
                sock.connect(addr)
            return None
        except OSError as e:
            if not (
                isinstance(e, ConnectionRefusedError) or e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)
            ):
                return None  # a timeout or a reset may be transient: huggingface_hub retries those
            failure = e
    if failure is None:
        return None
    why = (
        "connection refused" if isinstance(failure, ConnectionRefusedError) else str(failure.strerror).lower()
    )
    return f"{why} by {host}:{port}{via}" if isinstance(failure, ConnectionRefusedError) else f"{why}{via}"


@contextlib.contextmanager
def _hub_call(cache_only: bool) -> Iterator[None]:
    """Around each huggingface_hub call: hold back its warnings (retry chatter), and when only the
    cache may be read, put it in offline mode for the call.

    huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import; its offline switch also stops the
    requests it makes besides the download (e.g. fetching its agent registry from the endpoint),
    which ``local_files_only`` alone does not.
    """
    from huggingface_hub import constants

    lib = logging.getLogger("huggingface_hub")
    level, offline = lib.level, constants.HF_HUB_OFFLINE
    lib.setLevel(logging.ERROR)
    constants.HF_HUB_OFFLINE = offline or cache_only
    try:
        yield
    finally:
        lib.setLevel(level)
        constants.HF_HUB_OFFLINE = offline


# ---------------------------------------------------------------- error mapping


def _download_cmd(repo: str, revision: str | None) -> str:
    cmd = f"vggtctl download weights --repo {repo}"
    return cmd + (f" --revision {revision}" if revision else "")


def _map_hub_error(
    e: BaseException,
    repo: str,
    revision: str | None,
    filename: str,
    s: HubSettings,
    unreachable: str | None = None,
) -> Exception:
    """Translate huggingface_hub's exceptions into vggtctl errors with a next step.

    ``unreachable`` is why the endpoint could not be reached (the cache was read instead).
    """
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    rev = revision or "main"
    if isinstance(e, GatedRepoError):
        return DownloadError(
            f"{repo} is a gated repository and this account has no access (token {'set' if s.token else 'not set'})",
            f"accept the terms at {s.endpoint}/{repo}, then set HF_TOKEN to a token of that account and retry",
        )
    if isinstance(e, RepositoryNotFoundError):
        return DownloadError(
            f"repository {repo!r} not found on {s.endpoint} (or it is private and HF_TOKEN is "
            f"{'set but has no access' if s.token else 'not set'})",
            f"check the spelling (the default is {DEFAULT_REPO}); for a private repo set HF_TOKEN",
        )
    if isinstance(e, RevisionNotFoundError):
        return DownloadError(
            f"revision {rev!r} not found in {repo}",
            f"use a branch, tag or commit hash from {s.endpoint}/{repo}/commits/main, or drop --revision",
        )
    if isinstance(e, RemoteEntryNotFoundError):
        return DownloadError(
            f"{repo}@{rev} has none of the weight files {', '.join(WEIGHT_FILENAMES)}",
            "pass a repo that holds a VGGT checkpoint, or a local file with --model PATH",
        )
    if isinstance(e, LocalEntryNotFoundError):
        if unreachable is not None:
            return HostUnreachableError(
                f"cannot reach {s.endpoint} ({unreachable}) and {repo}@{rev} is not in the cache {s.cache_dir}",
                "check the network, the proxy (HTTPS_PROXY/NO_PROXY) and HF_ENDPOINT; on a machine without "
                f"network, run `{_download_cmd(repo, revision)}` elsewhere with the same HF_HOME, "
                "then set HF_HUB_OFFLINE=1",
            )
        if s.offline:
            return DownloadError(
                f"HF_HUB_OFFLINE is set and {repo}@{rev} is not in the cache {s.cache_dir}: missing "
                f"{' (or '.join(WEIGHT_FILENAMES)}{')' * (len(WEIGHT_FILENAMES) - 1)}",
                f"run `{_download_cmd(repo, revision)}` on a machine with network access (same HF_HOME), "
                "or unset HF_HUB_OFFLINE",
            )
        return DownloadError(
            f"cannot reach {s.endpoint} for {repo}/{filename} and it is not in the cache {s.cache_dir}",
            "check the network, proxy and HF_ENDPOINT; once the file is cached, HF_HUB_OFFLINE=1 avoids the network",
        )
    if isinstance(e, HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", "?")
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return DownloadError(
            f"the Hub answered HTTP {status} for {repo}/{filename}: {first}",
            "if HF_TOKEN is set check it is valid; retry later for 5xx errors",
        )
    if isinstance(e, ValueError):
        return UsageError(f"invalid Hub request for {repo!r}: {e}", "a repo id looks like owner/name")
    return DownloadError(
        f"downloading {repo}/{filename} failed: {type(e).__name__}: {e}",
        f"re-run `{_download_cmd(repo, revision)}`: it resumes where it stopped",
    )


# ---------------------------------------------------------------- resolve / download


def _commit_from_path(path: Path, local_dir: Path | None, filename: str) -> str | None:
    if local_dir is None:
        parent = path.parent.name
        return parent if _COMMIT.match(parent) else None
    meta = local_dir / ".cache" / "huggingface" / "download" / f"{filename}.metadata"
    try:
        first = meta.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return None
    return first if _COMMIT.match(first) else None


def _lfs_sha256(path: Path, local_dir: Path | None, filename: str) -> str | None:
    """The sha256 the Hub published for this file (LFS etag), if it is known locally."""
    if local_dir is None:
        name = path.resolve().name
        return name if _SHA256.match(name) else None
    meta = local_dir / ".cache" / "huggingface" / "download" / f"{filename}.metadata"
    try:
        etag = meta.read_text().splitlines()[1].strip()
    except (OSError, IndexError):
        return None
    return etag if _SHA256.match(etag) else None


def _is_missing(e: BaseException, offline: bool) -> bool:
    """Whether to try the next weight file: the Hub says this one does not exist, or (offline) the cache
    lacks it. A network failure is not "missing": retrying another file would only repeat the wait."""
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    return isinstance(e, RemoteEntryNotFoundError) or (offline and isinstance(e, LocalEntryNotFoundError))


def fetch_weights(
    repo: str = DEFAULT_REPO,
    revision: str | None = None,
    *,
    local_dir: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    verify: bool = True,
    progress: Progress = NULL_PROGRESS,
) -> WeightsFile:
    """Resolve (and unless ``dry_run`` download) the weights of a Hub repo.

    ``model.safetensors`` is preferred, ``model.pt`` accepted. Honours ``HF_HUB_OFFLINE`` (cache only),
    ``HF_TOKEN``, ``HF_ENDPOINT`` and ``HF_HOME``/``HF_HUB_CACHE``; huggingface_hub resumes partial
    downloads and keeps the cache layout.

    Args:
        repo: Repo id (``owner/name``).
        revision: Branch, tag or commit hash; ``None`` means ``main``.
        local_dir: Download into this folder instead of the HF cache.
        dry_run: Only report the file, its size and whether it is cached.
        verify: Hash the file and compare with the Hub's published sha256 (LFS etag) when known.
        progress: Receives byte-count tasks for the download and the hashing.

    Returns:
        A :class:`WeightsFile`.

    Raises:
        DownloadError: Gated, missing repo/revision/file, offline without cache, network failure,
            or a file whose sha256 differs from the Hub's.
        UsageError: A malformed repo id.
    """
    from huggingface_hub import hf_hub_download

    if not looks_like_repo_id(repo):
        raise UsageError(
            f"{repo!r} is not a Hub repo id", f"a repo id looks like owner/name, e.g. {DEFAULT_REPO}"
        )
    s = hub_settings()
    unreachable = None if s.offline else unreachable_reason(s.endpoint)
    ldir = Path(local_dir).expanduser().resolve() if local_dir is not None else None
    common: dict[str, Any] = {
        "revision": revision,
        "cache_dir": str(s.cache_dir),
        "local_dir": str(ldir) if ldir else None,
        "token": s.token,
        "endpoint": s.endpoint,
        # An endpoint that cannot be reached leaves the cache: read it as HF_HUB_OFFLINE would.
        "local_files_only": s.offline or unreachable is not None,
    }
    cache_only = bool(common["local_files_only"])
    last: BaseException | None = None
    for i, filename in enumerate(WEIGHT_FILENAMES):
        try:
            with _hub_call(cache_only):
                info = hf_hub_download(repo, filename, dry_run=True, **common)
        except Exception as e:  # noqa: BLE001 - mapped below with the repo and file named
            if _is_missing(e, cache_only):
                last = e
                continue
            raise _map_hub_error(e, repo, revision, filename, s, unreachable) from None
        result = WeightsFile(
            repo=repo,
            revision=revision,
            commit=info.commit_hash,
            filename=filename,
            path=Path(info.local_path),
            size=info.file_size,
            cached=info.is_cached and not info.will_download,
            alternatives=list(WEIGHT_FILENAMES[i + 1 :]),
        )
        if dry_run:
            if result.cached and result.path.is_file():
                result.sha256 = file_sha256(result.path, progress) if verify else None
            return result
        try:
            with _hub_call(cache_only):
                local = Path(hf_hub_download(repo, filename, tqdm_class=_tqdm_bridge(progress), **common))
        except Exception as e:  # noqa: BLE001
            raise _map_hub_error(e, repo, revision, filename, s, unreachable) from None
        result.downloaded = not result.cached
        result.path = local
        result.commit = result.commit or _commit_from_path(local, ldir, filename)
        result.size = local.stat().st_size
        if verify:
            result.sha256 = file_sha256(local, progress)
            published = _lfs_sha256(local, ldir, filename)
            if published and published != result.sha256:
                raise DownloadError(
                    f"{local} has sha256 {result.sha256} but the Hub publishes {published}: the file is corrupt",
                    f"delete it and re-run `{_download_cmd(repo, revision)}`",
                )
        return result
    assert last is not None
    raise _map_hub_error(last, repo, revision, WEIGHT_FILENAMES[0], s, unreachable) from None

"""``vggtctl download eth3d``: plan, fetch, verify and extract ETH3D per-scene archives.

Layout under ``out``::

    <scene>/...                       what the archives extract to (read by vggtctl.data.eth3d)
    archives/<scene>_dslr_<kind>.7z   downloads (``.part`` while in flight; deleted after extraction
                                      unless --keep-archives)
    .vggtctl/manifest.json            per archive: bytes, sha256 of the verified download, and the
                                      extracted files with their sizes (the "complete" record)
    .vggtctl/lock                     one downloader per folder at a time

An archive counts as complete only when its record says so and (with ``verify``) every file it
extracted still has its size, so a re-run of a finished download touches no network and takes
milliseconds. Sizes come from the pinned table (``vggtctl/data/eth3d_archives.json``) or
``--manifest``; unknown sizes are fetched with HEAD. A size mismatch is always fatal; a sha256 mismatch
against the pinned or recorded hash is fatal unless ``verify`` is off.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vggtctl.data.eth3d import SUBSETS, TRAINING_SCENES
from vggtctl.errors import (
    ConfigError,
    DiskSpaceError,
    DownloadError,
    HostUnreachableError,
    Problem,
    UsageError,
    VggtctlError,
    raise_problems,
)
from vggtctl.paths import output_dir_problem
from vggtctl.progress import NULL_PROGRESS, Progress
from vggtctl.utils.atomic import atomic_write_json
from vggtctl.utils.fmt import bytes_si

BASE_URL = "https://www.eth3d.net/data/"
KINDS: tuple[str, ...] = ("undistorted", "jpg", "depth", "occlusion", "scan_eval")
# what evaluate and finetune need: undistorted images + calibration, distorted calibration (to map the
# depth), ground-truth depth, and the laser scans that evaluate's point-cloud metrics score against
DEFAULT_KINDS: tuple[str, ...] = ("undistorted", "jpg", "depth", "scan_eval")
EXTRACT_FACTOR = 3.5  # extracted size / archive size, upper end of what ETH3D archives show
_SCENE_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")

DiskUsage = Callable[[str], Any]


@dataclass
class DownloadConfig:
    """Everything ``vggtctl download eth3d`` was asked to do.

    Attributes:
        scenes: scene names (already resolved from ``--scenes``/``--subset``).
        kinds: archive kinds (``undistorted``, ``jpg``, ``depth``, ``occlusion``, ``scan_eval``).
        out: dataset folder.
        base_url: where ``<scene>_dslr_<kind>.7z`` live.
        jobs: archives transferred in parallel.
        keep_archives: keep the ``.7z`` files after extraction.
        verify: compute and check sha256 of downloads; check extracted file sizes on re-runs.
        dry_run: plan only.
        manifest: a JSON file ``{archive: {"bytes": N, "sha256": "..."}}`` replacing the pinned table.
        retries: consecutive failed attempts per archive before giving up.
        backoff: first retry delay in seconds (doubles, capped at 30 s).
        timeout: read timeout in seconds.
    """

    scenes: list[str]
    kinds: list[str] = field(default_factory=lambda: list(DEFAULT_KINDS))
    out: Path = field(default_factory=lambda: Path("."))
    base_url: str = BASE_URL
    jobs: int = 2
    keep_archives: bool = False
    verify: bool = True
    dry_run: bool = False
    manifest: Path | None = None
    retries: int = 8
    backoff: float = 1.0
    timeout: float = 60.0


@dataclass
class ArchivePlan:
    """One archive: where it comes from, how big it is and what is already on disk.

    ``state``: ``complete`` (extracted and verified), ``archive`` (downloaded, not extracted),
    ``partial`` (a ``.part`` file), ``missing``.
    """

    name: str
    scene: str
    kind: str
    url: str
    bytes: int | None
    sha256: str | None
    size_source: str
    state: str = "missing"
    have_bytes: int = 0

    @property
    def to_fetch(self) -> int:
        if self.state in ("complete", "archive"):
            return 0
        return max(0, (self.bytes or 0) - self.have_bytes)

    @property
    def disk_needed(self) -> int:
        if self.state == "complete":
            return 0
        return self.to_fetch + int(EXTRACT_FACTOR * (self.bytes or 0))


@dataclass
class DownloadPlan:
    """The archives of a run and the totals ``--dry-run`` prints."""

    out: Path
    archives: list[ArchivePlan]
    disk_free: int

    @property
    def total_bytes(self) -> int:
        return sum(a.bytes or 0 for a in self.archives)

    @property
    def fetch_bytes(self) -> int:
        return sum(a.to_fetch for a in self.archives)

    @property
    def disk_needed(self) -> int:
        return sum(a.disk_needed for a in self.archives)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "archives": [
                {**asdict(a), "to_fetch": a.to_fetch, "disk_needed": a.disk_needed} for a in self.archives
            ],
            "total_bytes": self.total_bytes,
            "fetch_bytes": self.fetch_bytes,
            "disk_needed": self.disk_needed,
            "disk_free": self.disk_free,
        }


@dataclass
class ArchiveOutcome:
    """What happened to one archive: ``skipped`` (already complete) or ``extracted``."""

    name: str
    scene: str
    kind: str
    status: str
    bytes: int
    sha256: str | None
    downloaded_bytes: int = 0
    resumed_from: int = 0
    files: int = 0
    seconds: float = 0.0


@dataclass
class DownloadReport:
    """The result of :func:`download_eth3d`."""

    out: Path
    scenes: list[str]
    archives: list[ArchiveOutcome]
    seconds: float

    @property
    def downloaded_bytes(self) -> int:
        return sum(a.downloaded_bytes for a in self.archives)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "scenes": self.scenes,
            "archives": [asdict(a) for a in self.archives],
            "downloaded_bytes": self.downloaded_bytes,
            "seconds": round(self.seconds, 3),
        }


# --- tables and names ---------------------------------------------------------------------------------
def archive_name(scene: str, kind: str) -> str:
    """``<scene>_dslr_<kind>.7z``."""
    return f"{scene}_dslr_{kind}.7z"


def pinned_table() -> dict[str, dict[str, Any]]:
    """The archive table shipped with vggtctl: ``{archive: {"bytes": N[, "sha256": hex]}}``."""
    text = resources.files("vggtctl").joinpath("data", "eth3d_archives.json").read_text(encoding="utf-8")
    return dict(json.loads(text)["archives"])


def load_manifest(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read a ``--manifest`` file: ``{archive: {"bytes": N, "sha256": "..." (optional)}}``.

    A document with a top-level ``"archives"`` object (the pinned table's format) is accepted too.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read --manifest {path}: {e.strerror}", "pass an existing JSON file") from e
    except json.JSONDecodeError as e:
        raise UsageError(f"--manifest {path}:{e.lineno}: invalid JSON ({e.msg})", "fix the file") from e
    if isinstance(doc, dict) and isinstance(doc.get("archives"), dict):
        doc = doc["archives"]
    if not isinstance(doc, dict):
        raise UsageError(f"--manifest {path}: expected a JSON object of archive name -> {{bytes, sha256}}")
    table: dict[str, dict[str, Any]] = {}
    for name, entry in doc.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int) or entry["bytes"] < 0:
            raise UsageError(
                f"--manifest {path}: entry {name!r} needs an integer 'bytes'", 'e.g. {"a.7z": {"bytes": 123}}'
            )
        sha = entry.get("sha256")
        if sha is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", str(sha)):
            raise UsageError(
                f"--manifest {path}: entry {name!r} has a sha256 that is not 64 hex digits: {sha!r}"
            )
        table[name] = {"bytes": entry["bytes"], **({"sha256": str(sha).lower()} if sha else {})}
    return table


def resolve_scenes(scenes: str | None, subset: str | None, *, free_names: bool = False) -> list[str]:
    """Scene list from ``--scenes a,b`` or ``--subset NAME`` (default: all 13 training scenes).

    Args:
        scenes: comma-separated names.
        subset: one of :data:`vggtctl.data.eth3d.SUBSETS`.
        free_names: accept names outside the 13 training scenes (mirrors / ``--manifest``).
    """
    if scenes and subset:
        raise ConfigError(
            "download settings",
            [Problem.of(("scenes", "subset"), "give one, not both")],
            "vggtctl download eth3d --subset facades",
        )
    if subset:
        if subset not in SUBSETS:
            raise UsageError(f"unknown subset {subset!r}", f"choose one of: {', '.join(SUBSETS)}")
        return list(SUBSETS[subset])
    if not scenes:
        return list(TRAINING_SCENES)
    names = [s.strip() for s in re.split(r"[,\s]+", scenes) if s.strip()]
    for name in names:
        if not _SCENE_NAME.match(name):
            raise UsageError(f"invalid scene name {name!r}", "scene names are letters, digits, '_' and '-'")
        if not free_names and name not in TRAINING_SCENES:
            raise UsageError(
                f"unknown ETH3D training scene {name!r}",
                f"choose from: {', '.join(TRAINING_SCENES)} (test scenes have no public ground truth)",
            )
    return list(dict.fromkeys(names))


def resolve_kinds(kinds: str | None) -> list[str]:
    """Kind list from ``--kinds a,b`` (default: :data:`DEFAULT_KINDS`: undistorted, jpg, depth, scan_eval)."""
    if not kinds:
        return list(DEFAULT_KINDS)
    names = [k.strip() for k in kinds.split(",") if k.strip()]
    bad = [k for k in names if k not in KINDS]
    if bad or not names:
        raise UsageError(
            f"unknown kind(s) {', '.join(bad) or repr(kinds)}", f"choose from: {', '.join(KINDS)}"
        )
    return list(dict.fromkeys(names))


# --- local manifest -----------------------------------------------------------------------------------
class LocalManifest:
    """``<out>/.vggtctl/manifest.json``: verified sha256s and the files each archive extracted."""

    def __init__(self, out: Path) -> None:
        self.path = out / ".vggtctl" / "manifest.json"
        self._lock = threading.Lock()
        self.data: dict[str, Any] = {"archives": {}}
        if self.path.exists():
            try:
                doc = json.loads(self.path.read_text(encoding="utf-8"))
                if isinstance(doc, dict) and isinstance(doc.get("archives"), dict):
                    self.data = doc
            except (OSError, json.JSONDecodeError):
                # an unreadable record only means we re-verify; the archives themselves are intact
                self.data = {"archives": {}}

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.data["archives"].get(name, {}))

    def update(self, name: str, **fields: Any) -> None:
        with self._lock:
            entry = self.data["archives"].setdefault(name, {})
            entry.update(fields)
            atomic_write_json(self.path, self.data)

    def forget(self, name: str, *keys: str) -> None:
        with self._lock:
            entry = self.data["archives"].get(name)
            if entry is None:
                return
            for k in keys or tuple(entry):
                entry.pop(k, None)
            atomic_write_json(self.path, self.data)

    def is_complete(self, name: str, out: Path, verify: bool) -> bool:
        entry = self.data["archives"].get(name) or {}
        if not entry.get("extracted"):
            return False
        files: dict[str, int] = entry.get("files") or {}
        if not verify:
            tops = {f.split("/", 1)[0] for f in files}
            return all((out / t).exists() for t in tops)
        for rel, size in files.items():
            try:
                if (out / rel).stat().st_size != size:
                    return False
            except OSError:
                return False
        return True


@contextlib.contextmanager
def _folder_lock(out: Path) -> Iterator[None]:
    """One downloader per dataset folder (advisory ``flock``; released when the process dies)."""
    import fcntl

    path = out / ".vggtctl" / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"another vggtctl download is writing to {out}",
                "wait for it to finish, or pass another --out",
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _free_bytes(out: Path, disk_usage: DiskUsage) -> int:
    p = out
    while not p.exists() and p != p.parent:
        p = p.parent
    return int(disk_usage(str(p)).free)


# --- planning -------------------------------------------------------------------------------------------
def plan_download(
    config: DownloadConfig,
    *,
    disk_usage: DiskUsage = shutil.disk_usage,
    session_factory: Callable[[], Any] | None = None,
) -> DownloadPlan:
    """Work out every archive's size and what is already on disk (HEAD only for unknown sizes).

    Raises:
        UsageError: bad kinds/manifest.
        DownloadError: a HEAD request failed for an archive of unknown size.
    """
    import requests

    from vggtctl.services.fetch import head_size, part_path

    out = Path(config.out)
    table = load_manifest(config.manifest) if config.manifest else pinned_table()
    source = "manifest" if config.manifest else "pinned"
    local = LocalManifest(out)
    base = config.base_url if config.base_url.endswith("/") else config.base_url + "/"
    archives: list[ArchivePlan] = []
    for scene in config.scenes:
        for kind in config.kinds:
            name = archive_name(scene, kind)
            entry = table.get(name, {})
            rec = local.get(name)
            size = entry.get("bytes")
            sha = entry.get("sha256") or rec.get("sha256")
            src = source if size is not None else ("recorded" if rec.get("bytes") is not None else "head")
            if size is None:
                size = rec.get("bytes")
            plan = ArchivePlan(name, scene, kind, base + name, size, sha, src)
            archive = out / "archives" / name
            if local.is_complete(name, out, config.verify):
                plan.state = "complete"
            elif archive.exists() and (size is None or archive.stat().st_size == size):
                plan.state, plan.have_bytes = "archive", archive.stat().st_size
            elif part_path(archive).exists():
                plan.state, plan.have_bytes = "partial", part_path(archive).stat().st_size
            archives.append(plan)
    unknown = [a for a in archives if a.bytes is None and a.state != "complete"]
    if unknown:
        factory = session_factory or requests.Session
        timeout = (15.0, config.timeout)

        def _head(a: ArchivePlan) -> None:
            a.bytes = head_size(a.url, factory(), timeout)
            a.size_source = "head"

        with ThreadPoolExecutor(max_workers=min(8, len(unknown))) as pool:
            try:
                for fut in [pool.submit(_head, a) for a in unknown]:
                    fut.result()
            except HostUnreachableError as e:
                raise _offline(e) from None
    return DownloadPlan(out=out, archives=archives, disk_free=_free_bytes(out, disk_usage))


def check_disk(plan: DownloadPlan) -> None:
    """Refuse to start without room for the downloads plus 3.5x their size extracted."""
    need = plan.disk_needed
    if need > plan.disk_free:
        fetch = plan.fetch_bytes
        raise DiskSpaceError(
            f"not enough free space in {plan.out}: need {bytes_si(need)} ({need} bytes: {bytes_si(fetch)} to "
            f"download + {bytes_si(need - fetch)} extracted, estimated {EXTRACT_FACTOR}x archive size), "
            f"{bytes_si(plan.disk_free)} free ({plan.disk_free} bytes)",
            "free some space or choose another --out; --dry-run lists the archives and their sizes",
        )


# --- running --------------------------------------------------------------------------------------------
def download_eth3d(
    config: DownloadConfig,
    progress: Progress = NULL_PROGRESS,
    *,
    cancel: threading.Event | None = None,
    disk_usage: DiskUsage = shutil.disk_usage,
) -> DownloadReport | DownloadPlan:
    """Download, verify and extract the requested ETH3D archives into ``config.out``.

    Returns the :class:`DownloadPlan` for ``dry_run``, else a :class:`DownloadReport`.

    Raises:
        UsageError: bad options, or another downloader holds the folder.
        DiskSpaceError: not enough room (checked before anything is fetched).
        DownloadError: an archive failed (the others still finish; ``.part`` files stay resumable).
        KeyboardInterrupt: Ctrl-C (``.part`` files stay resumable).
    """
    t0 = time.perf_counter()
    out = Path(config.out)
    # Before the plan (and any network): a dry run reports the same problems as the real run.
    problems = [Problem.of("jobs", "at least 1", config.jobs)] if config.jobs < 1 else []
    problems += filter(None, [output_dir_problem("out", out)])
    raise_problems("download settings", problems, "e.g. vggtctl download eth3d --out data/eth3d --jobs 2")
    plan = plan_download(config, disk_usage=disk_usage)
    if config.dry_run:
        return plan
    pending = [a for a in plan.archives if a.state != "complete"]
    outcomes: dict[str, ArchiveOutcome] = {
        a.name: ArchiveOutcome(a.name, a.scene, a.kind, "skipped", a.bytes or 0, a.sha256)
        for a in plan.archives
        if a.state == "complete"
    }
    if pending:
        check_disk(plan)
        out.mkdir(parents=True, exist_ok=True)
        with _folder_lock(out):
            _run(config, plan, pending, progress, cancel or threading.Event(), outcomes)
    return DownloadReport(
        out=out,
        scenes=list(config.scenes),
        archives=[outcomes[a.name] for a in plan.archives if a.name in outcomes],
        seconds=time.perf_counter() - t0,
    )


def _run(
    config: DownloadConfig,
    plan: DownloadPlan,
    pending: list[ArchivePlan],
    progress: Progress,
    cancel: threading.Event,
    outcomes: dict[str, ArchiveOutcome],
) -> None:
    import requests

    from vggtctl.services.fetch import RetryPolicy

    local = LocalManifest(plan.out)
    policy = RetryPolicy(retries=config.retries, backoff=config.backoff, timeout=(15.0, config.timeout))
    total = progress.task("total", total=sum(a.to_fetch for a in pending) or None, unit="B")
    sessions = threading.local()

    def session() -> requests.Session:
        if not hasattr(sessions, "s"):
            sessions.s = requests.Session()
        return sessions.s

    def work(a: ArchivePlan) -> ArchiveOutcome:
        return _process_archive(config, a, local, policy, session(), progress, total, cancel)

    failures: list[tuple[ArchivePlan, VggtctlError]] = []
    try:
        if config.jobs == 1 or len(pending) == 1:
            for a in pending:
                try:
                    outcomes[a.name] = work(a)
                except HostUnreachableError as e:
                    raise _offline(e) from None  # every other archive lives on the same host
                except VggtctlError as e:
                    failures.append((a, e))
        else:
            with ThreadPoolExecutor(max_workers=config.jobs, thread_name_prefix="eth3d") as pool:
                futures = {pool.submit(work, a): a for a in pending}
                try:
                    not_done = set(futures)
                    while not_done:
                        done, not_done = wait(not_done, timeout=0.2, return_when=FIRST_EXCEPTION)
                        for fut in done:
                            try:
                                outcomes[futures[fut].name] = fut.result()
                            except HostUnreachableError as e:
                                raise _offline(e) from None
                            except VggtctlError as e:
                                failures.append((futures[fut], e))
                except BaseException:
                    cancel.set()  # workers stop at their next chunk; their .part files stay
                    raise
    finally:
        total.close()
    if failures:
        if len(failures) == 1:
            raise failures[0][1]
        listing = "; ".join(f"{a.name}: {e.message}" for a, e in failures)
        raise DownloadError(
            f"{len(failures)} of {len(pending)} archives failed: {listing}",
            "re-run the same command: finished archives are skipped and partial ones resume",
        )


def _offline(e: HostUnreachableError) -> HostUnreachableError:
    """The fetch error with the ways to work without the ETH3D server."""
    return HostUnreachableError(
        e.message,
        f"{e.hint}: --base-url URL; without a network, `vggtctl download eth3d --synthetic` generates test "
        "scenes, and archives copied into OUT/archives/ are used as they are",
    )


def _process_archive(
    config: DownloadConfig,
    a: ArchivePlan,
    local: LocalManifest,
    policy: Any,
    session: Any,
    progress: Progress,
    total: Any,
    cancel: threading.Event,
) -> ArchiveOutcome:
    from vggtctl.services.extract import ArchiveError, safe_extract
    from vggtctl.services.fetch import discard_partial, fetch

    t0 = time.perf_counter()
    out = Path(config.out)
    archive = out / "archives" / a.name
    task = progress.task(a.name, total=a.bytes, unit="B")
    if a.have_bytes and a.state == "partial":
        task.update(completed=a.have_bytes)

    def on_bytes(n: int) -> None:
        task.advance(n)
        total.advance(n)

    try:
        result = fetch(
            a.url,
            archive,
            expected_bytes=a.bytes,
            expected_sha256=a.sha256 if config.verify else None,
            verify=config.verify,
            session=session,
            policy=policy,
            on_bytes=on_bytes,
            cancel=cancel,
        )
    finally:
        task.close()
    if result.sha256:
        local.update(a.name, bytes=result.bytes, sha256=result.sha256, extracted=False)
    progress.log(f"extracting {a.name} ({bytes_si(result.bytes)})")
    try:
        extracted = safe_extract(archive, out)
    except ArchiveError as e:
        discard_partial(archive)
        local.forget(a.name)  # the recorded sha256 belonged to bad data
        raise DownloadError(
            f"{a.name}: {e.message}; deleted the archive, nothing was extracted",
            "re-run the same command to download it again; if it repeats, the server's file is damaged",
        ) from e
    local.update(a.name, bytes=result.bytes, extracted=True, files=extracted.files,
                 **({"sha256": result.sha256} if result.sha256 else {}))  # fmt: skip
    if not config.keep_archives:
        discard_partial(archive)
    return ArchiveOutcome(
        name=a.name,
        scene=a.scene,
        kind=a.kind,
        status="extracted",
        bytes=result.bytes,
        sha256=result.sha256,
        downloaded_bytes=0 if result.cached else result.bytes - result.resumed_from,
        resumed_from=result.resumed_from,
        files=len(extracted.files),
        seconds=round(time.perf_counter() - t0, 3),
    )

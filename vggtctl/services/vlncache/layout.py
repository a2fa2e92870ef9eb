"""The cache directory: header, content-addressed entries, manifests.

::

    CACHE_DIR/
      cache.json                      format version, the spec of the last build, every spec built
      entries/ab/cd/<key>.safetensors one value per sample: "features" [P, C] + "grid" [2] (h, w)
      manifest.jsonl                  one row per (spec, sample id): key, shape, bytes, sha256, frames
      shards/<build>.rank-00001.jsonl rows a rank appended while building (merged by rank 0, then removed)
      build.lock                      held by the build that writes (see ``lock``)

Entries are written to a temporary name, fsynced and renamed, so an entry either exists whole or not
at all; a manifest row is appended only after its entry is in place. Two levels of 256 folders keep
every folder small at R2R scale (612k entries → ~9 per leaf folder).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vggtctl.errors import DiskSpaceError, InputError
from vggtctl.utils.atomic import atomic_open, atomic_write_json, atomic_write_text

from .spec import FORMAT_VERSION, CacheSpec

HEADER = "cache.json"
MANIFEST = "manifest.jsonl"
SHARDS = "shards"
ENTRIES = "entries"
FEATURES = "features"
GRID = "grid"


@dataclass(frozen=True)
class EntryRow:
    """One manifest row: where a sample's value is and how to check it."""

    id: str
    spec: str
    key: str
    shape: tuple[int, int]
    grid: tuple[int, int]
    bytes: int
    sha256: str
    frames: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EntryRow:
        return cls(
            id=str(d["id"]),
            spec=str(d["spec"]),
            key=str(d["key"]),
            shape=(int(d["shape"][0]), int(d["shape"][1])),
            grid=(int(d["grid"][0]), int(d["grid"][1])),
            bytes=int(d["bytes"]),
            sha256=str(d["sha256"]),
            frames=tuple(str(f) for f in d["frames"]),
        )


class CacheDir:
    """Paths and plain-file operations of one cache directory (no model, no torch)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def header_path(self) -> Path:
        return self.root / HEADER

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def lock_path(self) -> Path:
        return self.root / "build.lock"

    def entry_path(self, key: str) -> Path:
        return self.root / ENTRIES / key[:2] / key[2:4] / f"{key}.safetensors"

    def shard_path(self, build: str, rank: int) -> Path:
        return self.root / SHARDS / f"{build}.rank-{rank:05d}.jsonl"

    def exists(self) -> bool:
        return self.header_path.is_file()

    # ------------------------------------------------------------------ header
    def read_header(self) -> dict[str, Any]:
        """The header, checked for a format this code can read.

        Raises:
            InputError: No cache here, an unreadable header, or one from a newer format version.
        """
        try:
            header = json.loads(self.header_path.read_text())
        except FileNotFoundError:
            raise InputError(
                f"{self.root} is not a vggtctl cache (no {HEADER})",
                "build one with `vggtctl cache build --data FILE --cache-dir DIR`",
            ) from None
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(
                f"cannot read {self.header_path}: {e}", "the cache header is damaged; rebuild"
            ) from None
        version = header.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise InputError(
                f"{self.root} uses cache format version {version!r}; this vggtctl reads up to {FORMAT_VERSION}",
                "upgrade vggtctl, or build a new cache in another --cache-dir",
            )
        return header

    def current_spec(self) -> CacheSpec:
        return CacheSpec.from_dict(self.read_header()["spec"])

    def specs(self) -> dict[str, CacheSpec]:
        return {k: CacheSpec.from_dict(v) for k, v in self.read_header().get("specs", {}).items()}

    def model_source(self, spec_id: str) -> dict[str, Any] | None:
        """How the model of a spec was named at build time (``source``, ``revision``, ``preset``)."""
        return self.read_header().get("models", {}).get(spec_id)

    def write_header(self, spec: CacheSpec, model_source: dict[str, Any]) -> None:
        """Record ``spec`` as the current one (earlier specs stay listed until pruned)."""
        old = self.read_header() if self.exists() else {}
        specs = dict(old.get("specs", {}))
        models = dict(old.get("models", {}))
        specs[spec.spec_id] = spec.to_dict()
        models[spec.spec_id] = model_source
        atomic_write_json(
            self.header_path,
            {"format_version": FORMAT_VERSION, "spec": spec.to_dict(), "specs": specs, "models": models},
        )

    def forget_specs(self, keep: str) -> None:
        """Drop every spec but ``keep`` from the header (after prune removed their entries)."""
        old = self.read_header()
        old["specs"] = {k: v for k, v in old.get("specs", {}).items() if k == keep}
        old["models"] = {k: v for k, v in old.get("models", {}).items() if k == keep}
        atomic_write_json(self.header_path, old)

    # ------------------------------------------------------------------ manifest
    @staticmethod
    def _rows(path: Path) -> Iterator[EntryRow]:
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                yield EntryRow.from_dict(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError):
                continue  # the partial last line of a killed writer: its entry is redone

    def rows(self) -> dict[tuple[str, str], EntryRow]:
        """Every row (merged manifest, then leftover shards), keyed by (spec id, sample id)."""
        out = {(r.spec, r.id): r for r in self._rows(self.manifest_path)}
        for shard in sorted((self.root / SHARDS).glob("*.jsonl")) if (self.root / SHARDS).is_dir() else []:
            out.update({(r.spec, r.id): r for r in self._rows(shard)})
        return out

    def write_manifest(self, rows: Iterable[EntryRow]) -> None:
        ordered = sorted(rows, key=lambda r: (r.spec, r.id))
        atomic_write_text(self.manifest_path, "".join(r.to_json() + "\n" for r in ordered))

    def merge_shards(self) -> dict[tuple[str, str], EntryRow]:
        """Fold every shard into the manifest (rank 0, with the build lock held), then remove them."""
        rows = self.rows()
        shards = sorted((self.root / SHARDS).glob("*.jsonl")) if (self.root / SHARDS).is_dir() else []
        if shards or not self.manifest_path.exists():
            self.write_manifest(rows.values())
        for shard in shards:
            shard.unlink(missing_ok=True)
        return rows


_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def write_entry(path: Path, payload: bytes) -> tuple[int, str]:
    """Write an entry's bytes atomically; returns (size, sha256). No partial file survives a failure.

    Raises:
        DiskSpaceError: The disk (or quota, or file-size limit) is full; the temporary file is gone.
    """
    try:
        with atomic_open(path, "wb") as f:
            f.write(payload)
    except OSError as e:
        if e.errno in _FULL:
            raise DiskSpaceError(
                f"disk full while writing {path.name} ({e.strerror}); no partial entry was left",
                "free space (or pick another --cache-dir), then re-run: the build resumes where it stopped",
            ) from None
        raise
    return len(payload), hashlib.sha256(payload).hexdigest()


def append_row(path: Path, row: EntryRow) -> None:
    """Append one row to a rank's shard manifest and flush it to disk (the entry is already whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(row.to_json() + "\n")
        f.flush()
        os.fsync(f.fileno())

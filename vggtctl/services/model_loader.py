"""The one way any command gets a VGGT model: :func:`load_model`.

Sources: a Hub repo id (``facebook/VGGT-1B``), a local file or folder (``.safetensors``; ``.pt``/``.pth``
only through ``torch.load(weights_only=True)``), or ``"tiny"`` (the seeded tiny checkpoint, generated
into the vggtctl cache on first use). The preset is inferred from the checkpoint's keys and shapes
unless given; loading is strict with a grouped key report; safetensors are memory-mapped. The model
carries ``model.provenance`` (source, revision, sha256, preset) for commands to record.

Extension points (quantized artifacts, LoRA adapters): :func:`register_reader` adds a file format
(suffix -> state-dict reader) and :func:`register_artifact` adds a loader for a whole artifact
(e.g. a folder with a quantization manifest) that is tried before the plain state-dict path. Both
keep resolution (Hub/local/tiny), hashing and provenance in one place.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import struct
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vggtctl.errors import CheckpointError, InputError, UsageError
from vggtctl.paths import vggtctl_home
from vggtctl.progress import NULL_PROGRESS, Progress
from vggtctl.services.hub import DEFAULT_REPO, fetch_weights, file_sha256, looks_like_repo_id

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from vggtctl.models.vggt.config import VGGTConfig
    from vggtctl.models.vggt.model import VGGT

log = logging.getLogger(__name__)

TINY_SOURCE = "tiny"
# Folder lookup order: safetensors first (memory-mapped, cannot carry code).
LOCAL_FILENAMES: tuple[str, ...] = ("model.safetensors", "model.pt", "model.pth")
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "module")
_PREFIXES = ("module.", "_orig_mod.", "model.")
_ST_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
}


@dataclass(frozen=True)
class Provenance:
    """Where a loaded model came from; commands write it into ``meta.json``.

    Attributes:
        source: What the caller passed (repo id, path or ``"tiny"``).
        kind: ``"hub"``, ``"file"`` or ``"tiny"``.
        path: The local weights file that was read.
        repo: Hub repo id (Hub sources only).
        revision: Resolved commit hash for Hub sources (or the requested revision when unknown).
        sha256: SHA-256 of the weights file.
        preset: Model preset (``"vggt-1b"``, ``"tiny"``), given or inferred.
        format: ``"safetensors"`` or ``"pt"``.
        heads: Heads present in the checkpoint.
    """

    source: str
    kind: str
    path: str
    repo: str | None
    revision: str | None
    sha256: str
    preset: str
    format: str
    heads: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        d = asdict(self)
        d["heads"] = list(self.heads)
        return d


@dataclass(frozen=True)
class ResolvedSource:
    """A model source turned into one local weights file."""

    source: str
    kind: str
    path: Path
    repo: str | None = None
    revision: str | None = None


# ---------------------------------------------------------------- registries (extension points)

StateDictReader = Callable[[Path], "dict[str, torch.Tensor]"]
ArtifactDetector = Callable[[Path], bool]
ArtifactLoader = Callable[..., "VGGT"]

_READERS: dict[str, tuple[str, StateDictReader]] = {}
_ARTIFACTS: list[tuple[str, ArtifactDetector, ArtifactLoader]] = []


def register_reader(suffix: str, fmt: str, reader: StateDictReader) -> None:
    """Teach the loader a weights file format.

    Args:
        suffix: File suffix, lower case with the dot (``".safetensors"``).
        fmt: Format name recorded in the provenance.
        reader: ``reader(path) -> {key: tensor}`` (raise ``CheckpointError`` for bad files).
    """
    _READERS[suffix.lower()] = (fmt, reader)


def register_artifact(name: str, detect: ArtifactDetector, load: ArtifactLoader) -> None:
    """Register a loader for a whole artifact (quantized export, base + adapter, ...).

    ``detect(path)`` is asked first for every resolved local path (file or folder); the first that
    answers True builds the model with ``load(resolved: ResolvedSource, preset=, device=, dtype=,
    progress=)``. The loader returns a VGGT; :func:`load_model` still attaches the provenance.
    """
    _ARTIFACTS.append((name, detect, load))


# ---------------------------------------------------------------- readers


def _safetensors_header(path: Path) -> dict[str, Any]:
    """Parse and sanity-check a safetensors header (clear errors for truncated or foreign files)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(
                f"{path} is {size} bytes: too short for a safetensors file", _redownload_hint(path)
            )
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise CheckpointError(
                f"{path}: safetensors header claims {n} bytes but the file has {size}: truncated or not safetensors",
                _redownload_hint(path),
            )
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise CheckpointError(
                f"{path}: safetensors header is not valid JSON", _redownload_hint(path)
            ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object", _redownload_hint(path))
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            begin, stop = info["data_offsets"]
            end = max(end, int(stop))
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                f"{path}: malformed safetensors entry {key!r}", _redownload_hint(path)
            ) from None
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path} is truncated: {size} bytes on disk, its header needs {8 + n + end}",
            _redownload_hint(path),
        )
    return header


def _redownload_hint(path: Path) -> str:
    if "models--" in str(path) or ".cache" in str(path):
        return "delete the file and re-run `vggtctl download weights` (downloads resume)"
    return "re-download or re-export the checkpoint; `vggtctl download weights` fetches facebook/VGGT-1B"


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Memory-map a safetensors file (tensors share the file's pages until written)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    _safetensors_header(path)
    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as e:
        raise CheckpointError(f"{path}: cannot read safetensors: {e}", _redownload_hint(path)) from None


def _safetensors_dtypes() -> dict[str, torch.dtype]:
    import torch

    return {
        "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
        "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
        "U8": torch.uint8, "BOOL": torch.bool,
    }  # fmt: skip


def read_safetensors_converted(
    path: Path, dtype_for: Callable[[str], torch.dtype]
) -> dict[str, torch.Tensor]:
    """Read a safetensors file tensor by tensor with plain reads, converting each as it arrives.

    A memory map keeps every page of the file resident once touched, so converting float32
    weights to bf16 from a map peaks at the whole file plus the result. Reading one tensor at a
    time peaks at the result plus one tensor in the file's dtype.

    Args:
        path: The ``.safetensors`` file.
        dtype_for: Target dtype for a key (floating point tensors only are converted).
    """
    import torch

    header = _safetensors_header(path)
    dtypes = _safetensors_dtypes()
    entries = sorted(
        ((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: int(kv[1]["data_offsets"][0])
    )
    out: dict[str, torch.Tensor] = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        for key, info in entries:
            src = dtypes.get(str(info.get("dtype")))
            if src is None:
                raise CheckpointError(
                    f"{path}: tensor {key!r} has unsupported safetensors dtype {info.get('dtype')!r}",
                    _redownload_hint(path),
                )
            begin, stop = (int(v) for v in info["data_offsets"])
            t = torch.empty([int(d) for d in info.get("shape", [])], dtype=src)
            buf = t.reshape(-1).view(torch.uint8).numpy()
            if buf.nbytes != stop - begin:
                raise CheckpointError(
                    f"{path}: tensor {key!r} spans {stop - begin} bytes, its shape and dtype need {buf.nbytes}",
                    _redownload_hint(path),
                )
            f.seek(8 + n + begin)
            view, done = memoryview(buf), 0
            while done < buf.nbytes:
                got = f.readinto(view[done:])
                if not got:
                    raise CheckpointError(f"{path} ended inside tensor {key!r}", _redownload_hint(path))
                done += got
            target = dtype_for(key)
            out[key] = t.to(target) if t.is_floating_point() and target != src else t
    return out


def read_torch_pickle(path: Path) -> dict[str, torch.Tensor]:
    """Load a ``.pt``/``.pth`` with ``torch.load(weights_only=True)``: tensors and plain containers only."""
    import torch

    def _load(mmap: bool) -> Any:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)

    try:
        try:
            obj = _load(mmap=True)
        except RuntimeError as e:
            # Legacy (non-zip) torch files cannot be memory-mapped; read them normally.
            if "mmap" not in str(e).lower():
                raise
            obj = _load(mmap=False)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects other than tensors, which could run code "
            f"when unpickled ({first[:160]})",
            "load it only if you trust it and convert it to safetensors in that trusted environment; "
            "vggtctl never unpickles arbitrary objects",
        ) from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint (truncated or corrupt): {type(e).__name__}: {str(e)[:160]}",
            _redownload_hint(path),
        ) from None
    return _unwrap_state_dict(obj, path)


def _is_tensor_mapping(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Accept ``{"model": sd}``-style wrappers (training checkpoints) around the state dict."""
    for _ in range(3):
        if _is_tensor_mapping(obj):
            return dict(obj)
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is not None:
                obj = inner
                continue
            # A state dict with a few non-tensor extras (e.g. "_metadata" or a version int): keep tensors.
            import torch

            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors and len(tensors) >= len(obj) / 2:
                return tensors
        break
    kind = type(obj).__name__
    keys = list(obj.keys())[:8] if isinstance(obj, Mapping) else []
    raise CheckpointError(
        f"{path} holds a {kind} without a state dict of tensors (top-level keys: {keys})",
        "save the model's state_dict() (optionally under 'model'), or pass a .safetensors file",
    )


def _strip_prefixes(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Drop a ``module.`` (DDP) / ``_orig_mod.`` (torch.compile) / ``model.`` prefix shared by every key."""
    out = dict(sd)
    changed = True
    while changed and out:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in out):
                out = {k[len(prefix) :]: v for k, v in out.items()}
                changed = True
    return out


register_reader(".safetensors", "safetensors", read_safetensors)
register_reader(".pt", "pt", read_torch_pickle)
register_reader(".pth", "pt", read_torch_pickle)


# ---------------------------------------------------------------- sources


def tiny_checkpoint_path(create: bool = True) -> Path:
    """Path of the seeded tiny checkpoint in the vggtctl cache, generated (atomically) on first use."""
    path = vggtctl_home() / "weights" / "tiny" / "model.safetensors"
    if create and not path.is_file():
        write_tiny_weights(path)
    return path


def write_tiny_weights(path: str | os.PathLike[str]) -> Path:
    """Write the seeded tiny checkpoint to ``path`` atomically (no network: it is generated).

    Args:
        path: Destination ``.safetensors`` file, or a folder to hold ``model.safetensors``.

    Returns:
        The written file.
    """
    from vggtctl.models.vggt.tiny import write_tiny_checkpoint

    dest = Path(path).expanduser()
    if dest.is_dir() or dest.suffix == "":
        dest = dest / "model.safetensors"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp.safetensors")
    try:
        written = Path(write_tiny_checkpoint(tmp))
        with open(written, "rb") as f:
            os.fsync(f.fileno())
        os.replace(written, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _pick_in_folder(folder: Path) -> Path:
    for name in LOCAL_FILENAMES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _READERS)
    if len(candidates) == 1:
        return candidates[0]
    listing = ", ".join(p.name for p in sorted(folder.iterdir())[:10]) or "nothing"
    if candidates:
        raise InputError(
            f"{folder} holds several checkpoints ({', '.join(p.name for p in candidates)})",
            "pass the file itself with --model FILE",
        )
    raise InputError(
        f"no weights file in {folder} (looked for {', '.join(LOCAL_FILENAMES)}; found {listing})",
        "pass a .safetensors/.pt file, or fetch weights with `vggtctl download weights --local-dir DIR`",
    )


def resolve_source(
    source: str | os.PathLike[str] = DEFAULT_REPO,
    revision: str | None = None,
    *,
    progress: Progress = NULL_PROGRESS,
) -> ResolvedSource:
    """Turn a model source into one local weights file (downloading Hub weights if needed).

    Args:
        source: Hub repo id, local file or folder, or ``"tiny"``.
        revision: Hub revision (branch, tag or commit); only valid for Hub sources.
        progress: Receives download and hashing progress.

    Returns:
        The :class:`ResolvedSource`.

    Raises:
        InputError: A local path that does not exist or holds no weights.
        UsageError: ``--revision`` with a local source, or a source that is neither a path nor a repo id.
        DownloadError: Any Hub failure (see :func:`vggtctl.services.hub.fetch_weights`).
    """
    src = os.fspath(source)
    if src == TINY_SOURCE:
        if revision:
            raise UsageError("--revision applies to Hub repos, not to the generated tiny checkpoint")
        return ResolvedSource(src, "tiny", tiny_checkpoint_path())
    path = Path(src).expanduser()
    if path.exists():
        if revision:
            raise UsageError(
                f"--revision {revision} applies to Hub repos, but {src} is a local path",
                "drop --revision, or pass a repo id like facebook/VGGT-1B",
            )
        if path.is_dir():
            if _artifact_for(path) is not None:
                return ResolvedSource(src, "file", path.resolve())
            path = _pick_in_folder(path)
        if path.suffix.lower() not in _READERS and _artifact_for(path) is None:
            raise InputError(
                f"unsupported weights file {path} (suffix {path.suffix or 'none'!r})",
                f"use one of: {', '.join(sorted(_READERS))}",
            )
        return ResolvedSource(src, "file", path.resolve())
    if looks_like_repo_id(src) and not src.startswith((".", "/", "~")):
        weights = fetch_weights(src, revision, progress=progress)
        return ResolvedSource(src, "hub", weights.path, repo=src, revision=weights.commit or revision)
    if any(sep in src for sep in ("/", os.sep)) or Path(src).suffix.lower() in _READERS:
        raise InputError(f"model file not found: {src}", "check the path, or pass a Hub repo id or 'tiny'")
    raise UsageError(
        f"model source {src!r} is neither a file, a folder, a Hub repo id (owner/name) nor 'tiny'",
        f"e.g. --model {DEFAULT_REPO}, --model ./weights/model.safetensors or --model tiny",
    )


def _artifact_for(path: Path) -> tuple[str, ArtifactDetector, ArtifactLoader] | None:
    for entry in _ARTIFACTS:
        if entry[1](path):
            return entry
    return None


# ---------------------------------------------------------------- state dict -> model


def read_state_dict(
    path: str | os.PathLike[str], dtype: torch.dtype | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """Read a weights file into a flat state dict (wrappers and ``module.`` prefixes removed).

    Args:
        path: A file with a registered suffix.
        dtype: The model dtype the weights are for. For bf16/fp16 a safetensors file is read tensor
            by tensor and converted as it is read (see :func:`read_safetensors_converted`) instead
            of memory-mapped: peak ~ the converted model, not the float32 file plus the model.

    Returns:
        ``(state_dict, format)``.
    """
    import torch

    p = Path(path)
    entry = _READERS.get(p.suffix.lower())
    if entry is None:
        raise InputError(f"unsupported weights file {p}", f"use one of: {', '.join(sorted(_READERS))}")
    fmt, reader = entry
    if reader is read_safetensors and dtype in (torch.bfloat16, torch.float16):
        from vggtctl.models.vggt.build import target_dtype

        def dtype_for(key: str) -> torch.dtype:
            return target_dtype(key.removeprefix("module."), dtype)  # type: ignore[arg-type]

        return _strip_prefixes(read_safetensors_converted(p, dtype_for)), fmt
    return _strip_prefixes(reader(p)), fmt


def _preset_name(config: VGGTConfig) -> str:
    from vggtctl.models.vggt.config import preset_name

    return preset_name(config) or "custom"


def build_config(state_dict: Mapping[str, Any], preset: str | None) -> VGGTConfig:
    """The config to build: the given preset with the heads the checkpoint has, or the inferred one."""
    from vggtctl.models.vggt.build import infer_config
    from vggtctl.models.vggt.config import get_config

    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    if preset is None:
        return infer_config(shapes)
    config = get_config(preset)
    # A checkpoint without e.g. the track head is still this preset; match its heads.
    head_prefix = {
        "camera": "camera_head.",
        "depth": "depth_head.",
        "point": "point_head.",
        "track": "track_head.",
    }
    switches = {}
    for head, prefix in head_prefix.items():
        flag = f"enable_{head}"
        if hasattr(config, flag):
            switches[flag] = any(k.startswith(prefix) for k in shapes)
    return replace(config, **switches) if switches else config


def model_from_state_dict(
    state_dict: Mapping[str, Any],
    preset: str | None = None,
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> VGGT:
    """Build a VGGT from a state dict: preset given (heads matched to the checkpoint) or inferred.

    Raises:
        CheckpointError: Keys or shapes do not fit; the grouped report names the preset the
            checkpoint does look like.
        UsageError: Unknown preset.
    """
    from vggtctl.models.vggt.build import from_state_dict

    return from_state_dict(build_config(state_dict, preset), state_dict, device=device, dtype=dtype)


def load_model(
    source: str | os.PathLike[str] = DEFAULT_REPO,
    preset: str | None = None,
    device: str = "cpu",
    dtype: torch.dtype | str | None = None,
    revision: str | None = None,
    *,
    progress: Progress = NULL_PROGRESS,
) -> VGGT:
    """Load a VGGT model in eval mode from the Hub, a local file/folder or the seeded tiny weights.

    Args:
        source: Hub repo id (default ``facebook/VGGT-1B``), local ``.safetensors``/``.pt``/``.pth`` or a
            folder holding one, or ``"tiny"``.
        preset: ``"vggt-1b"`` or ``"tiny"``; inferred from the checkpoint when ``None``.
        device: Torch device for the weights (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        dtype: Weight dtype (``None`` keeps the checkpoint's, float32 for VGGT-1B); a torch dtype or
            ``"fp32"``/``"bf16"``/``"fp16"``.
        revision: Hub branch, tag or commit (Hub sources only).
        progress: Receives download and hashing progress and stage messages.

    Returns:
        The model, with ``model.provenance`` (:class:`Provenance`).

    Raises:
        CheckpointError: Unsafe, truncated or mismatched checkpoints (grouped key report).
        DownloadError: Hub failures, offline without cache.
        InputError: Missing local files.
        UsageError: Unknown preset, bad source or revision use.
    """
    t0 = time.perf_counter()
    torch_dtype = parse_dtype(dtype)
    resolved = resolve_source(source, revision, progress=progress)
    artifact = _artifact_for(resolved.path)
    if artifact is not None:
        name, _, loader = artifact
        model = loader(resolved, preset=preset, device=device, dtype=torch_dtype, progress=progress)
        fmt = name
    else:
        state_dict, fmt = read_state_dict(resolved.path, torch_dtype)
        model = model_from_state_dict(state_dict, preset, device=device, dtype=torch_dtype)
        del state_dict
    sha = file_sha256(resolved.path, progress) if resolved.path.is_file() else ""
    config = model.config
    model.provenance = Provenance(  # type: ignore[attr-defined]
        source=resolved.source,
        kind=resolved.kind,
        path=str(resolved.path),
        repo=resolved.repo,
        revision=resolved.revision,
        sha256=sha,
        preset=_preset_name(config),
        format=fmt,
        heads=tuple(config.heads),
    )
    model.eval()
    log.info("loaded %s (%s) in %.2fs", resolved.path, model.provenance.preset, time.perf_counter() - t0)  # type: ignore[attr-defined]
    return model


_DTYPE_NAMES = {
    "fp32": "float32",
    "float32": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
}


def parse_dtype(dtype: Any) -> torch.dtype | None:
    """``None``/``"auto"`` -> None; ``"fp32"``/``"bf16"``/``"fp16"`` (or a torch dtype) -> torch dtype."""
    if dtype is None or dtype == "auto":
        return None
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPE_NAMES.get(str(dtype).lower())
    if name is None:
        raise UsageError(f"unknown dtype {dtype!r}", "use auto, fp32, bf16 or fp16")
    return getattr(torch, name)

"""Checkpoint files -> flat state dicts: safetensors and ``.pt`` (``torch.load(weights_only=True)``).

What this module knows: file formats (a suffix -> reader registry), how a training checkpoint wraps
its state dict (``{"model": sd, "epoch": 3}``), the key prefixes that wrappers add (``module.`` from
DDP, ``_orig_mod.`` from torch.compile, ``model.``) and how to convert dtype while reading. It knows
nothing of the Hub, of model presets or of where a source came from (see ``model_loader``).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vggtctl.errors import CheckpointError, InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "module")
PREFIXES = ("module.", "_orig_mod.", "model.")
# torch.save's legacy (non-zip) format starts with the pickled magic number 0x1950a86a20f9469cfc6c.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
_ZIP_MAGIC = b"PK\x03\x04"

StateDictReader = Callable[[Path], "dict[str, torch.Tensor]"]
DtypeFor = Callable[[str], "torch.dtype"]

_READERS: dict[str, tuple[str, StateDictReader]] = {}


def register_reader(suffix: str, fmt: str, reader: StateDictReader) -> None:
    """Teach the loader a weights file format (registering a suffix again replaces its reader).

    Args:
        suffix: File suffix, lower case with the dot (``".safetensors"``).
        fmt: Format name recorded in the provenance.
        reader: ``reader(path) -> {key: tensor}`` (raise ``CheckpointError`` for bad files).
    """
    _READERS[suffix.lower()] = (fmt, reader)


def supported_suffixes() -> list[str]:
    """The suffixes a reader is registered for, sorted."""
    return sorted(_READERS)


def is_supported(path: Path) -> bool:
    """Whether a reader is registered for the file's suffix."""
    return path.suffix.lower() in _READERS


def redownload_hint(path: Path) -> str:
    """What to do about a damaged file: depends on whether it lives in the HF cache."""
    if "models--" in str(path) or ".cache" in str(path):
        return "delete the file and re-run `vggtctl download weights` (downloads resume)"
    return "re-download or re-export the checkpoint (`vggtctl download weights` fetches the default VGGT-1B weights)"


def _sentence(text: str, limit: int = 200) -> str:
    """The first sentence of a library's message, whole: never cut mid-word or mid-quote."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())
    m = re.search(r"(?<=[.!?])\s", text)
    first = text[: m.start()] if m else text
    if len(first) <= limit:
        return first
    return first[:limit].rsplit(" ", 1)[0] + " …"


# ---------------------------------------------------------------- safetensors


def safetensors_header(path: Path) -> dict[str, Any]:
    """Parse and sanity-check a safetensors header (clear errors for truncated or foreign files)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(
                f"{path} is {size} bytes: too short for a safetensors file", redownload_hint(path)
            )
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise CheckpointError(
                f"{path}: safetensors header claims {n} bytes but the file has {size}: truncated or not safetensors",
                redownload_hint(path),
            )
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise CheckpointError(
                f"{path}: safetensors header is not valid JSON", redownload_hint(path)
            ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object", redownload_hint(path))
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            _, stop = info["data_offsets"]
            end = max(end, int(stop))
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                f"{path}: malformed safetensors entry {key!r}", redownload_hint(path)
            ) from None
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path} is truncated: {size} bytes on disk, its header needs {8 + n + end}",
            redownload_hint(path),
        )
    return header


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Memory-map a safetensors file (tensors share the file's pages until written)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    safetensors_header(path)
    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as e:
        raise CheckpointError(
            f"{path}: cannot read safetensors: {_sentence(str(e))}", redownload_hint(path)
        ) from None


def _safetensors_dtypes() -> dict[str, torch.dtype]:
    import torch

    return {
        "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
        "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
        "U8": torch.uint8, "BOOL": torch.bool,
    }  # fmt: skip


def read_safetensors_converted(path: Path, dtype_for: DtypeFor) -> dict[str, torch.Tensor]:
    """Read a safetensors file tensor by tensor with plain reads, converting each as it arrives.

    A memory map keeps every page of the file resident once touched, so converting float32
    weights to bf16 from a map peaks at the whole file plus the result. Reading one tensor at a
    time peaks at the result plus one tensor in the file's dtype.

    Args:
        path: The ``.safetensors`` file.
        dtype_for: Target dtype for a key as stored in the file (floating point tensors only are converted).
    """
    import torch

    header = safetensors_header(path)
    dtypes = _safetensors_dtypes()
    entries = sorted(
        ((k, v) for k, v in header.items() if k != "__metadata__"),
        key=lambda kv: int(kv[1]["data_offsets"][0]),
    )
    out: dict[str, torch.Tensor] = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        for key, info in entries:
            src = dtypes.get(str(info.get("dtype")))
            if src is None:
                raise CheckpointError(
                    f"{path}: tensor {key!r} has unsupported safetensors dtype {info.get('dtype')!r}",
                    redownload_hint(path),
                )
            begin, stop = (int(v) for v in info["data_offsets"])
            t = torch.empty([int(d) for d in info.get("shape", [])], dtype=src)
            buf = t.reshape(-1).view(torch.uint8).numpy()
            if buf.nbytes != stop - begin:
                raise CheckpointError(
                    f"{path}: tensor {key!r} spans {stop - begin} bytes, its shape and dtype need {buf.nbytes}",
                    redownload_hint(path),
                )
            f.seek(8 + n + begin)
            view, done = memoryview(buf), 0
            while done < buf.nbytes:
                got = f.readinto(view[done:])
                if not got:
                    raise CheckpointError(f"{path} ended inside tensor {key!r}", redownload_hint(path))
                done += got
            target = dtype_for(key)
            out[key] = t.to(target) if t.is_floating_point() and target != src else t
    return out


# ---------------------------------------------------------------- .pt / .pth


def _torch_file_kind(path: Path) -> str:
    """``"zip"`` (torch.save), ``"legacy"`` (old torch.save) or ``"unknown"``, from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_MAGIC))
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return "zip-damaged"
        return "zip" if any(n.endswith("data.pkl") for n in names) else "zip-other"
    return "legacy" if head == _LEGACY_TORCH_MAGIC else "unknown"


def _not_a_torch_file(path: Path, kind: str) -> CheckpointError:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
    if kind == "zip-damaged":
        return CheckpointError(
            f"{path} is truncated or corrupt: {size} bytes of a zip archive (the torch.save format) "
            "whose directory cannot be read",
            redownload_hint(path),
        )
    what = (
        "a zip archive without the data.pkl of a torch.save checkpoint"
        if kind == "zip-other"
        else f"neither a torch.save zip archive nor a legacy torch file (its first bytes are {head.hex()})"
    )
    return CheckpointError(
        f"{path} is not a torch checkpoint: {size} bytes, {what}",
        "check that the path names the weights file; " + redownload_hint(path),
    )


def read_torch_pickle(path: Path) -> dict[str, torch.Tensor]:
    """Load a ``.pt``/``.pth`` with ``torch.load(weights_only=True)``: tensors and plain containers only."""
    import torch

    kind = _torch_file_kind(path)
    if kind not in ("zip", "legacy"):
        raise _not_a_torch_file(path, kind)
    try:
        # Zip checkpoints are memory-mapped; the legacy format cannot be.
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=kind == "zip")
    except pickle.UnpicklingError as e:
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
        why = _sentence(detail.group(1) if detail else str(e))
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects other than tensors, which could run code "
            f"when unpickled (torch says: {why})",
            "load it only if you trust it and convert it to safetensors in that trusted environment; "
            "vggtctl never unpickles arbitrary objects",
        ) from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, ValueError, OSError) as e:
        raise CheckpointError(
            f"{path} is a torch checkpoint that cannot be read (truncated or corrupt): "
            f"{type(e).__name__}: {_sentence(str(e))}",
            redownload_hint(path),
        ) from None
    return unwrap_state_dict(obj, path)


def _is_tensor_mapping(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Accept ``{"model": sd}``-style wrappers (training checkpoints) around the state dict."""
    import torch

    for _ in range(3):
        if _is_tensor_mapping(obj):
            return dict(obj)
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is not None:
                obj = inner
                continue
            # A state dict with a few non-tensor extras (e.g. "_metadata" or a version int): keep tensors.
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


register_reader(".safetensors", "safetensors", read_safetensors)
register_reader(".pt", "pt", read_torch_pickle)
register_reader(".pth", "pt", read_torch_pickle)


# ---------------------------------------------------------------- prefixes and the one entry point


def prefix_map(keys: Iterable[str]) -> dict[str, str]:
    """``{stored key: key without wrapper prefixes}``: drop ``module.``/``_orig_mod.``/``model.``
    (in any order, repeatedly) while every key shares it."""
    names = list(keys)
    stripped = list(names)
    changed = True
    while changed and stripped:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in stripped):
                stripped = [k[len(prefix) :] for k in stripped]
                changed = True
    return dict(zip(names, stripped, strict=True))


def strip_prefixes(sd: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict with the wrapper prefixes shared by every key removed (see :func:`prefix_map`)."""
    names = prefix_map(sd)
    return {names[k]: v for k, v in sd.items()}


def read_state_dict(
    path: str | os.PathLike[str], dtype_for: DtypeFor | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """Read a weights file into a flat state dict (wrappers and wrapper prefixes removed).

    Args:
        path: A file with a registered suffix.
        dtype_for: The dtype each (prefix-stripped) key should have. Given, a safetensors file is read
            tensor by tensor and converted as it is read (see :func:`read_safetensors_converted`)
            instead of memory-mapped: peak ~ the converted model, not the file plus the model.
            Prefixes are resolved from the header first, so a ``module.``/``_orig_mod.``/``model.``
            checkpoint gets the same per-key dtypes as a bare one.

    Returns:
        ``(state_dict, format)``.
    """
    p = Path(path)
    entry = _READERS.get(p.suffix.lower())
    if entry is None:
        raise InputError(f"unsupported weights file {p}", f"use one of: {', '.join(supported_suffixes())}")
    fmt, reader = entry
    if dtype_for is not None and reader is read_safetensors:
        names = prefix_map(k for k in safetensors_header(p) if k != "__metadata__")
        converted = read_safetensors_converted(p, lambda key: dtype_for(names[key]))
        return {names[k]: v for k, v in converted.items()}, fmt
    return strip_prefixes(reader(p)), fmt

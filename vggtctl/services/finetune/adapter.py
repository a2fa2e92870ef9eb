"""The fine-tuned LoRA adapter as a model source: ``--model RUN_DIR`` or ``--model RUN_DIR/adapter``.

An adapter folder is PEFT's format (``adapter_config.json`` + ``adapter_model.safetensors``) plus
``vggtctl_adapter.json`` naming the base model (source, revision, sha256, preset) and the strategy. It is
registered with the loader's artifact registry (:func:`vggtctl.services.model_loader.register_artifact`),
so every command that takes ``--model`` loads base + adapter, merged, with provenance recording both.
``merge_run`` writes the merged weights in the ``facebook/VGGT-1B`` key layout (safetensors).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from vggtctl.errors import CheckpointError, InputError
from vggtctl.runs import layout
from vggtctl.utils.atomic import atomic_write_json

BASE_FILE = "vggtctl_adapter.json"
ADAPTER_DIR = "adapter"  # RUN/adapter: the final adapter of a run


def adapter_folder(path: Path) -> Path | None:
    """The adapter folder ``path`` is or holds (a run directory's final adapter, else its newest checkpoint's)."""
    if (path / BASE_FILE).is_file() and (path / "adapter_config.json").is_file():
        return path
    if (path / ADAPTER_DIR / BASE_FILE).is_file():
        return path / ADAPTER_DIR
    if layout.is_run_dir(path):
        from vggtctl.services.finetune.checkpoints import latest_checkpoint

        ckpt = latest_checkpoint(path / layout.CHECKPOINTS)
        if ckpt is not None and (ckpt / "adapter" / BASE_FILE).is_file():
            return ckpt / "adapter"
    return None


def is_adapter(path: Path) -> bool:
    return path.is_dir() and adapter_folder(path) is not None


def write_base_file(folder: Path, base: dict[str, Any], strategy: str, step: int) -> None:
    atomic_write_json(folder / BASE_FILE, {"base": base, "strategy": strategy, "step": step})


def read_base_file(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / BASE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"cannot read {folder / BASE_FILE}: {e}", "the adapter folder is damaged"
        ) from None


def base_source(base: dict[str, Any]) -> str:
    """What to pass to ``load_model`` for the base: the repo id, the tiny model, or the local path."""
    if base.get("kind") == "hub" and base.get("repo"):
        return str(base["repo"])
    if base.get("kind") == "tiny":
        return "tiny"
    return str(base.get("path") or base["source"])


def load_base_and_adapter(path: Path, *, device: str = "cpu", dtype: Any = None, merge: bool = True) -> Any:
    """Base model + adapter of ``path``; merged into a plain VGGT (default) or a ``PeftModel``.

    Raises:
        InputError: ``path`` holds no adapter.
        CheckpointError: The base model's sha256 differs from the one the adapter was trained on.
    """
    from vggtctl.services.finetune.targets import import_peft

    import_peft()
    from peft import PeftModel

    from vggtctl.services.hashing import path_sha256
    from vggtctl.services.model_loader import load_model
    from vggtctl.services.provenance import AdapterInfo, Provenance, provenance_of, set_provenance

    folder = adapter_folder(path)
    if folder is None:
        raise InputError(
            f"{path} holds no vggtctl LoRA adapter", "pass a finetune run directory or its adapter/"
        )
    info = read_base_file(folder)
    base_info = info["base"]
    base = load_model(
        base_source(base_info),
        device=device,
        dtype=dtype,
        revision=base_info.get("revision") if base_info.get("kind") == "hub" else None,
    )
    base_prov = provenance_of(base)
    if base_prov is not None and base_info.get("sha256") and base_prov.sha256 != base_info["sha256"]:
        raise CheckpointError(
            f"the base model {base_source(base_info)} has sha256 {base_prov.sha256[:12]}..., but the adapter in "
            f"{folder} was trained on {str(base_info['sha256'])[:12]}...",
            "load the same base weights the run used (see its meta.json)",
        )
    peft_model = PeftModel.from_pretrained(base, str(folder))
    peft_model.eval()
    if not merge:
        return peft_model
    merged = peft_model.merge_and_unload()
    if base_prov is not None:
        set_provenance(
            merged,
            Provenance(
                source=str(path),
                kind="file",
                path=str(folder),
                repo=None,
                revision=None,
                sha256=path_sha256(folder / "adapter_model.safetensors"),
                preset=base_prov.preset,
                format="lora-adapter",
                heads=base_prov.heads,
                base=base_prov,
                adapter=AdapterInfo(
                    path=str(folder), sha256=path_sha256(folder / "adapter_model.safetensors")
                ),
            ),
        )
    merged.eval()
    return merged


def _load_artifact(
    resolved: Any, *, preset: Any = None, device: str = "cpu", dtype: Any = None, progress: Any = None
) -> Any:
    return load_base_and_adapter(Path(resolved.path), device=device, dtype=dtype)


def register() -> None:
    """Make adapters and finetune run directories loadable by ``load_model`` (idempotent)."""
    from vggtctl.services.model_loader import register_artifact

    register_artifact("lora-adapter", is_adapter, _load_artifact)


def merge_run(path: Path, out: Path) -> dict[str, Any]:
    """Write base + adapter merged as ``out/model.safetensors`` (VGGT-1B key layout) + ``out/meta.json``.

    Returns:
        What was written: ``{"out", "weights", "keys", "provenance"}``.
    """
    from safetensors.torch import save_file

    from vggtctl.services.provenance import provenance_of

    if not path.exists():
        raise InputError(f"{path} does not exist", "pass a finetune run directory (--output-dir of the run)")
    model = load_base_and_adapter(path)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    prov = provenance_of(model)
    meta = {"source": str(path), "provenance": prov.to_dict() if prov else None, "keys": len(state)}
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
    atomic_write_json(staging / "meta.json", meta)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "meta.json"):
        os.replace(staging / name, out / name)
    shutil.rmtree(staging, ignore_errors=True)
    return {
        "out": str(out),
        "weights": str(out / "model.safetensors"),
        "keys": len(state),
        "provenance": meta["provenance"],
    }

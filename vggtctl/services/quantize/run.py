"""The ``vggtctl quantize`` workflow: check inputs, calibrate, quantize, save, compare, commit.

Every check that can fail on the user's input (settings, source model, calibration and comparison
folders, the output folder) runs before the model loads; the artifact is staged next to ``out``
and moved in whole (``quantization.json`` last), so a failure or Ctrl-C leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vggtctl.errors import UsageError
from vggtctl.progress import NULL_PROGRESS, Progress
from vggtctl.utils.atomic import StagedDir, atomic_write_json

from .artifact import ARTIFACT_KIND, MANIFEST, REPORT, WEIGHTS, config_sha256, is_artifact
from .calibration import CalibrationSet, choose_frames, load_scene
from .config import FORMAT_VERSION, INT_FORMAT_VERSION, QuantizeConfig

PATCH_TOKENS_NOTE = (
    "activation ranges calibrated on patch tokens only (camera/register/cls tokens are "
    "data-independent and heavy-tailed; at run time they are clipped to the patch-token range)"
)


@dataclass
class QuantizeResult:
    """What ``quantize`` wrote and measured (``to_dict`` is the ``--json`` document)."""

    out: str
    method: str
    observer: str | None
    rotation: str
    bits: int
    device: str
    layers: dict[str, int]
    float_layers: list[str]
    file_bytes: int
    calibration: dict[str, Any] | None
    report: dict[str, Any] | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    weight_dtype: str = "int"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_out(config: QuantizeConfig) -> None:
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output folder {out} is an existing file", "pass a folder path")
    if out.is_dir() and any(out.iterdir()) and not config.overwrite:
        kind = "a quantized artifact" if is_artifact(out) else "not empty"
        raise UsageError(f"output folder {out} is {kind}", "pass another --out, or --overwrite to replace it")


def _check_source(config: QuantizeConfig, progress: Progress) -> Any:
    from vggtctl.services.model_loader import resolve_source

    resolved = resolve_source(config.model, config.revision, progress=progress)
    if resolved.artifact == ARTIFACT_KIND:
        raise UsageError(
            f"{config.model} is already a quantized artifact; quantizing it again would compound the error",
            "quantize the float model it was made from (see base.source in its quantization.json)",
        )
    return resolved


def _compare_frames(config: QuantizeConfig, calibration: CalibrationSet | None, work: Path) -> CalibrationSet:
    if config.eval_data is not None:
        return choose_frames(config.eval_data, 1, config.compare_frames, config.seed, what="comparison")
    if config.calibration_data is not None:
        exclude = calibration.files if calibration else ()
        return choose_frames(
            config.calibration_data,
            1,
            config.compare_frames,
            config.seed + 1,
            exclude,
            what="held-out comparison",
        )
    from vggtctl.services.synthetic import generate_scenes

    (scene,) = generate_scenes(
        work / "synthetic", scenes=1, views=max(config.compare_frames, 2), seed=config.seed
    )
    return choose_frames(scene, 1, config.compare_frames, config.seed, what="comparison")


def _fp8_compute_ok(device: str) -> bool:
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(torch.device(device)) >= (8, 9)


def quantize_model(
    model: Any,
    config: QuantizeConfig,
    calibration: CalibrationSet | None = None,
    device: str = "cpu",
    progress: Progress = NULL_PROGRESS,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Quantize a float VGGT in place as ``config`` says (calibrating on ``calibration`` for static).

    Returns:
        ``(layers, float_layers)``: one dict per quantized layer (name, op, group, rotate, tokens,
        scheme; ``act_scale``/``per_tensor_weight`` for static layers) and the layers kept float.
    """
    import torch

    from .apply import apply_schemes, rotate_layers, scheme_for
    from .calibration import RangeCollector, calibrate
    from .hadamard import hadamard_block
    from .observers import make_observer
    from .selection import plan_layers

    plans, float_layers = plan_layers(
        model,
        attention=config.quantize_attention,
        heads=config.quantize_heads,
        patch_embed=config.quantize_patch_embed,
        rotate=config.rotate == "hadamard",
    )
    rotate_layers(model, [p.name for p in plans if p.rotate])
    observer = config.effective_observer
    scales: dict[str, float] = {}
    if calibration is not None and observer is not None:
        linear = [p for p in plans if p.op == "linear"]
        modules = dict(model.named_modules())
        collector = RangeCollector(
            observers={p.name: make_observer(observer) for p in linear},
            patch_only={p.name: p.tokens == "patch" for p in linear},
            rotate_block={
                p.name: hadamard_block(modules[p.name].in_features) if p.rotate else 1 for p in linear
            },
        )
        torch.manual_seed(config.seed)
        scales = calibrate(model, collector, calibration, device, progress)
    per_tensor_weight = observer in ("minmax", "histogram")
    layers = []
    for p in plans:
        scheme = scheme_for(p.op, config.type, config.bits, p.name in scales, config.weight_dtype)
        entry = {**p.to_dict(), "scheme": scheme}
        if scheme == "int8-static":
            entry["act_scale"] = scales[p.name]
            entry["per_tensor_weight"] = per_tensor_weight
        layers.append(entry)
    apply_schemes(model, layers, scales, per_tensor_weight)
    return layers, float_layers


def quantize(config: QuantizeConfig, progress: Progress = NULL_PROGRESS) -> QuantizeResult:
    """Quantize ``config.model`` into the artifact folder ``config.out``.

    Raises:
        ConfigError: Bad settings (all listed), e.g. an observer with a dynamic type.
        UsageError: A CUDA-only method on CPU, an already quantized source, an occupied ``out``.
        InputError: Calibration/comparison folders without (enough) images.
        CheckpointError/DownloadError: The source model cannot be loaded.
    """
    config.validate()
    import importlib.util

    from vggtctl.runtime.device import resolve_device

    if importlib.util.find_spec("torchao") is None:
        raise UsageError(
            "quantize needs torchao, which is not installed", "pip install 'vggtctl[quantize]' (torchao 0.18)"
        )
    from .torchao_import import import_torchao

    import_torchao()

    device = resolve_device(config.device)
    if config.bits == 4 and not device.startswith("cuda"):
        raise UsageError(
            "4-bit weight-only quantization needs CUDA (torchao's int4 kernels have no CPU path here)",
            "run with --device cuda on a GPU machine, or use --bits 8",
        )
    if config.weight_dtype == "fp8" and config.type == "dynamic" and not _fp8_compute_ok(device):
        raise UsageError(
            f"fp8 dynamic quantization (fp8 activations and weights) needs CUDA with compute capability "
            f">= 8.9 (torchao's float8 GEMM); {device} has none",
            "run with --device cuda on an Ada/Hopper GPU, or use --type weight-only --weight-dtype fp8 "
            "(runs on CPU)",
        )
    _check_out(config)
    resolved = _check_source(config, progress)
    calibration = None
    if config.type == "static":
        assert config.calibration_data is not None  # validate() checked
        calibration = choose_frames(
            config.calibration_data, config.calibration_samples, config.calibration_frames, config.seed
        )
    with tempfile.TemporaryDirectory(prefix="vggtctl-quantize-") as tmp:
        held_out = _compare_frames(config, calibration, Path(tmp)) if config.compare else None
        return _quantize(config, device, resolved, calibration, held_out, progress)


def _quantize(
    config: QuantizeConfig,
    device: str,
    resolved: Any,
    calibration: CalibrationSet | None,
    held_out: CalibrationSet | None,
    progress: Progress,
) -> QuantizeResult:
    from vggtctl.runtime.versions import versions
    from vggtctl.services.model_loader import load_model, provenance_of

    from .artifact import save_weights
    from .compare import compare

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model = load_model(
        config.model, config.preset, device=device, revision=config.revision, progress=progress
    )
    base = provenance_of(model)
    timings["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    layers, float_layers = quantize_model(model, config, calibration, device, progress)
    timings["quantize"] = time.perf_counter() - t0
    observer = config.effective_observer
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION if config.weight_dtype == "fp8" else INT_FORMAT_VERSION,
        "weight_dtype": config.weight_dtype,
        "kind": ARTIFACT_KIND,
        "method": config.type,
        "observer": observer,
        "rotation": config.rotate,
        "bits": config.bits,
        "calibration": (
            {
                **calibration.to_dict(),
                "samples": config.calibration_samples,
                "frames": config.calibration_frames,
                "seed": config.seed,
                "tokens": PATCH_TOKENS_NOTE,
            }
            if calibration is not None
            else None
        ),
        "layers": layers,
        "float_layers": float_layers,
        "model_config": dataclasses.asdict(model.config),
        "base": base.to_dict() if base is not None else {"source": config.model},
        "source_sha256": base.sha256 if base is not None else None,
        "versions": versions(("torch", "torchao", "safetensors", "numpy")),
    }
    manifest["config_sha256"] = config_sha256(manifest)
    counts = dict(Counter(layer["scheme"] for layer in layers))
    with StagedDir(config.out, marker=MANIFEST, replace=(WEIGHTS, REPORT)) as staged:
        t0 = time.perf_counter()
        sizes = save_weights(model, staged / WEIGHTS)
        atomic_write_json(staged / MANIFEST, manifest)
        timings["save"] = time.perf_counter() - t0
        del model
        report: dict[str, Any] | None = None
        if held_out is not None:
            t0 = time.perf_counter()
            images = load_scene(held_out.scenes[0], int(manifest["model_config"]["img_size"]))
            report = compare(
                config.model,
                staged,
                images,
                float_file=Path(resolved.path),
                device=device,
                repeats=config.repeats,
                eval_data=config.eval_data,
                eval_frames=config.compare_frames,
                progress=progress,
            )
            report["held_out"] = held_out.to_dict()
            report["quantized"]["file"] = str(Path(config.out) / WEIGHTS)
            timings["compare"] = time.perf_counter() - t0
        atomic_write_json(
            staged / REPORT,
            {
                "method": config.type,
                "observer": observer,
                "rotation": config.rotate,
                "weight_dtype": config.weight_dtype,
                "layers": counts,
                "quantized_layers": [layer["name"] for layer in layers],
                "float_layers": float_layers,
                "tensor_bytes": sizes["tensor_bytes"],
                "calibration_tokens": PATCH_TOKENS_NOTE if calibration is not None else None,
                "comparison": report,
            },
        )
    return QuantizeResult(
        out=str(config.out),
        method=config.type,
        observer=observer,
        rotation=config.rotate,
        bits=config.bits,
        device=device,
        layers=counts,
        float_layers=float_layers,
        file_bytes=sizes["file_bytes"],
        calibration=manifest["calibration"],
        report=report,
        timings_s=timings,
        weight_dtype=config.weight_dtype,
    )

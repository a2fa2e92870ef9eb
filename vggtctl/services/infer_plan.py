"""The memory plan of ``vggtctl infer``: estimate peak memory, then choose one pass or overlapping chunks.

The estimate is a linear model fitted to measured runs (``memory_fit.json`` next to this module, produced
by ``benchmarks/bench_scale.py --fit``; the measurements and the fit are in ``docs/performance.md``):

    peak = runtime + weights + a · tokens + b · dpt + c · pixels

* ``weights``: the parameter bytes of the config in the load dtype (bf16 loads keep heads in float32);
* ``tokens`` = S · P · C · 4 bytes: one float32 copy of every frame's tokens (P tokens per frame, width C).
  The aggregator keeps the layers the heads read (5 of 24 for VGGT-1B, 2C wide each) and the working set
  of one block (qkv, the MLP's 4C hidden layer) in multiples of this;
* ``dpt`` = min(S, dpt chunk) · H · W · F · 4 bytes: the DPT heads run over chunks of frames, and their
  full-resolution feature maps (F channels) live for one chunk at a time;
* ``pixels`` = S_total · H · W · 4 bytes: the inputs and the per-pixel outputs (depth, points, confidences)
  of *all* frames, which stay in memory while chunks run (a chunked run has S_total > S);
* ``runtime``, ``a``, ``b``, ``c``: fitted per preset on CPU (peak RSS of fresh processes, one-pass and
  chunked rows together: in one-pass rows ``tokens`` and ``pixels`` grow together, chunked rows separate them).

Several devices (``--nproc-per-node``, :mod:`vggtctl.services.infer_dist`): every rank holds the weights,
runs the frame-local parts on its own ``ceil(S / world)`` frames (the ``a`` token term, the DPT term) and,
in each global block, the gathered tokens of all S frames: :data:`GATHER_COPIES` float32 copies of
``tokens(S)`` (the gathered tokens, their norm, qkv, the roped keys), counted from
``_global_block_local``, not fitted. Outputs are gathered to every rank, so ``pixels`` counts all frames.
CPU ranks on one host share its memory: each is planned for ``1 / ranks_per_host`` of it.

On CUDA the same coefficients are used against ``torch.cuda.mem_get_info`` with the CUDA context
instead of the Python runtime: that is an extrapolation from the CPU fit, **not a GPU measurement** (none
was lent to this project yet); ``InferPlan.basis`` says so.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vggtctl.errors import ConfigError, Problem, VggtctlError
from vggtctl.services.infer_chunked import chunk_problems, chunk_ranges
from vggtctl.utils.procfs import meminfo_bytes, status_bytes

if TYPE_CHECKING:  # pragma: no cover
    from vggtctl.utils.procfs import meminfo_bytes, status_bytes
from vggtctl.models.vggt.config import VGGTConfig

FIT_FILE = Path(__file__).with_name("memory_fit.json")
CHUNK_CHOICES = ("auto", "off")
# Only this share of the available memory is planned for: the allocator, the outputs and other processes
# move around it.
SAFETY = 0.9
CUDA_CONTEXT_BYTES = 600 * 2**20  # typical CUDA context + cuDNN/cuBLAS workspaces, outside the allocator
# Per global block, a rank holds the gathered tokens of all frames, their LayerNorm, the qkv projection
# (3) and the roped keys: 6 copies of tokens(S) (vggtctl/services/infer_dist.py::_global_block_local).
GATHER_COPIES = 6.0
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)


class MemoryPlanError(VggtctlError):
    """More memory needed than available with chunking off (or even for the smallest chunk)."""


def parse_memory(text: str) -> int:
    """``"20GB"`` / ``"20G"`` / ``"512MiB"`` / plain bytes -> bytes (SI units, binary with ``iB``).

    Raises:
        ConfigError: Not a positive size.
    """
    m = _SIZE_RE.match(str(text))
    if m:
        unit = (m.group(2) or "").lower()
        letter = unit[:1] if unit[:1] in ("k", "m", "g", "t") else ""
        step = 1024 if unit.endswith("ib") else 1000
        value = float(m.group(1)) * step ** " kmgt".index(letter or " ")
        if value >= 1:
            return int(value)
    raise ConfigError(
        "infer settings",
        [Problem.of("max_memory", "a size like 20GB, 16GiB or 800MB", text)],
        "e.g. --max-memory 20GB",
    )


def gib(n: float) -> str:
    """Bytes as ``12.3 GiB`` (or MiB below 1 GiB)."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


# ---------------------------------------------------------------- the memory model


@lru_cache(maxsize=1)
def load_fit() -> dict[str, Any]:
    """The fitted coefficients shipped with vggtctl (see ``benchmarks/bench_scale.py --fit``)."""
    return json.loads(FIT_FILE.read_text())


def tokens_per_frame(config: VGGTConfig, h: int, w: int) -> int:
    return (h // config.patch_size) * (w // config.patch_size) + config.patch_start_idx


@lru_cache(maxsize=16)
def weight_bytes(config: VGGTConfig, load_dtype: str = "float32") -> int:
    """Parameter bytes of ``config`` loaded as ``load_dtype`` (the loader's bf16 rule for low precision)."""
    import torch

    from vggtctl.models.vggt.build import expected_shapes, target_dtype

    dt = getattr(torch, load_dtype)
    return sum(math.prod(shape) * target_dtype(key, dt).itemsize for key, shape in expected_shapes(config))


def memory_features(
    config: VGGTConfig, frames: int, h: int, w: int, total_frames: int | None = None
) -> dict[str, float]:
    """The model's inputs (bytes) for passes of ``frames`` frames of ``h x w`` over ``total_frames`` in all."""
    p = tokens_per_frame(config, h, w)
    chunk = config.dpt_frames_chunk_size or frames
    dpt_frames = min(frames, chunk) if (config.enable_depth or config.enable_point) else 0
    return {
        "tokens": float(frames * p * config.embed_dim * 4),
        "dpt": float(dpt_frames * h * w * config.dpt_features * 4),
        "pixels": float((total_frames or frames) * h * w * 4),
    }


def _coefficients(preset: str) -> dict[str, Any]:
    fits = load_fit()["presets"]
    return fits.get(preset) or fits["vggt-1b"]


def estimate_peak_bytes(
    config: VGGTConfig,
    preset: str,
    frames: int,
    h: int,
    w: int,
    *,
    total_frames: int | None = None,
    device: str = "cpu",
    load_dtype: str = "float32",
    world: int = 1,
) -> int:
    """Estimated peak memory of passes over ``frames`` frames (of ``total_frames``; process RSS on CPU).

    On CUDA only the pass itself lives on the device (the inputs and outputs of all frames stay on the
    host), so the ``pixels`` term counts one pass.

    With ``world > 1`` devices it is the peak of the busiest one (the rank with ``ceil(frames / world)``
    frames): frame-local terms over its own frames, the gathered global-attention tokens of all
    ``frames`` (:data:`GATHER_COPIES`), weights and outputs replicated.

    Activations are fitted in float32; with bf16/fp16 weights on CUDA the aggregator's activations are
    assumed half as large (extrapolated, not measured).
    """
    c = _coefficients(preset)
    cuda = device.startswith("cuda")
    total = frames if cuda else (total_frames or frames)
    local = frames_per_device(frames, world)
    f = memory_features(config, local, h, w, total)
    low = cuda and load_dtype != "float32"
    token_copies = c["a_tokens"] * f["tokens"]
    if world > 1:
        token_copies += GATHER_COPIES * memory_features(config, frames, h, w)["tokens"]
    act = (0.5 if low else 1.0) * token_copies + c["b_dpt"] * f["dpt"] + c["c_pixels"] * f["pixels"]
    if cuda:
        base = CUDA_CONTEXT_BYTES
    else:
        base = c["runtime_bytes"]
    return int(base + weight_bytes(config, load_dtype) + act)


def frames_per_device(frames: int, world: int = 1) -> int:
    """Frames of the busiest rank when ``frames`` are split across ``world`` devices (rank 0's share)."""
    return -(-frames // max(1, world))


# ---------------------------------------------------------------- available memory


def available_bytes(device: str) -> tuple[int, str]:
    """Memory this run may use on ``device`` and where the number came from."""
    if device.startswith("cuda"):
        import torch

        free, total = torch.cuda.mem_get_info(torch.device(device))
        return int(free), f"free on {device} (torch.cuda.mem_get_info, of {gib(total)})"
    avail = meminfo_bytes("MemAvailable")
    rss = status_bytes("VmRSS") or 0
    if avail is None:
        return 8 * 2**30, "unknown (no /proc/meminfo): assumed 8 GiB"
    return avail + rss, "MemAvailable (/proc/meminfo) + this process's RSS"


# ---------------------------------------------------------------- the plan


@dataclass
class InferPlan:
    """What ``vggtctl infer`` will do, and why (printed by ``--dry-run``, saved in meta.json)."""

    frames: int
    image_size_hw: tuple[int, int]
    device: str
    dtype: str
    preset: str
    budget_bytes: int
    budget_source: str
    one_pass_bytes: int
    mode: str  # "one-pass" or "chunked"
    reason: str
    chunk_size: int | None = None
    overlap: int | None = None
    chunk_bytes: int | None = None
    chunks: list[tuple[int, int]] = field(default_factory=list)
    basis: str = ""
    world: int = 1  # devices (ranks) sharing every pass; the byte numbers are per device when > 1
    frames_per_device: int = 0  # the busiest rank's frames of one pass (or of one chunk when chunked)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """Human-readable decision with the numbers."""
        h, w = self.image_size_hw
        per = " per device" if self.world > 1 else ""
        out = [
            f"plan: {self.frames} frames at {w}x{h}, {self.preset}, {self.dtype} on {self.device}"
            + (f" x {self.world} devices" if self.world > 1 else ""),
            f"  one pass needs ~{gib(self.one_pass_bytes)}{per}; budget {gib(self.budget_bytes)}{per} "
            f"({self.budget_source})",
        ]
        if self.world > 1:
            out.append(
                f"  each device: <= {self.frames_per_device} frames of a pass for the frame-local parts and "
                f"heads, global attention over the gathered tokens of all {self.chunk_size or self.frames}, "
                "weights replicated"
            )
        if self.mode == "chunked":
            out.append(
                f"  -> chunked: {len(self.chunks)} chunks of {self.chunk_size} frames, overlap {self.overlap}, "
                f"~{gib(self.chunk_bytes or 0)}{per} per chunk ({self.reason})"
            )
        else:
            out.append(f"  -> one pass ({self.reason})")
        out.append(f"  estimate: {self.basis}")
        return out


def _largest_chunk(fits: Any, frames: int, budget: float) -> int:
    lo, hi = 1, frames
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo if fits(lo) <= budget else 0


def default_overlap(size: int) -> int:
    """A quarter of the chunk, at least 2 and at most 16 frames (and always fewer than the chunk)."""
    return max(1, min(size - 1, max(2, min(16, size // 4))))


def plan_inference(
    config: VGGTConfig,
    preset: str,
    frames: int,
    image_hw: tuple[int, int],
    *,
    device: str = "cpu",
    dtype: str = "float32",
    load_dtype: str = "float32",
    max_memory: int | None = None,
    chunk: str = "auto",
    chunk_size: int | None = None,
    overlap: int | None = None,
    world: int = 1,
    ranks_per_host: int | None = None,
) -> InferPlan:
    """Choose one pass or chunks for ``frames`` frames of ``image_hw`` on ``device`` (or on each of ``world``).

    Args:
        config: The model structure (from the checkpoint header or the preset).
        preset: The preset name (selects the fitted coefficients).
        frames: Number of frames.
        image_hw: Model input size (H, W).
        device: Resolved device.
        dtype: Compute dtype name (reported).
        load_dtype: The weights' dtype (``float32`` / ``bfloat16`` / ``float16``).
        max_memory: A budget in bytes; default: what the device has free.
        chunk: ``auto`` (chunk only when one pass does not fit) or ``off`` (never chunk).
        chunk_size: Force chunks of this many frames (overrides ``auto``).
        overlap: Frames shared by consecutive chunks (default :func:`default_overlap`).
        world: Devices every pass is split across (``--nproc-per-node`` x nodes); budgets and estimates
            are then per device, and a chunk of N frames puts ``ceil(N / world)`` on the busiest one.
        ranks_per_host: CPU ranks sharing this host's memory (default ``world``): the detected CPU
            budget is divided among them (``--max-memory`` is always per device).

    Raises:
        ConfigError: Bad chunk settings (``chunk_size <= overlap``, ``chunk_size`` with ``--chunk off``).
        MemoryPlanError: With ``chunk off``, one pass needs more than the budget; or no chunk fits.
    """
    h, w = image_hw
    if chunk not in CHUNK_CHOICES:
        raise ConfigError(
            "infer settings", [Problem.of("chunk", f"allowed: {', '.join(CHUNK_CHOICES)}", chunk)]
        )
    if chunk == "off" and chunk_size is not None:
        raise ConfigError(
            "infer settings",
            [Problem.of("chunk_size", "conflicts with chunk off", chunk_size)],
            "drop --chunk off to run in chunks, or drop --chunk-size to run one pass",
        )
    if chunk_size is not None:
        problems = chunk_problems(chunk_size, overlap if overlap is not None else default_overlap(chunk_size))
        if problems:
            raise ConfigError("infer settings", problems, "e.g. --chunk-size 32 --overlap 8")

    def need(n: int) -> int:
        return estimate_peak_bytes(
            config, preset, n, h, w, total_frames=frames, device=device, load_dtype=load_dtype, world=world
        )

    if max_memory is not None:
        budget, source = int(max_memory), "--max-memory"
    else:
        budget, source = available_bytes(device)
        share = ranks_per_host if ranks_per_host is not None else world
        if not device.startswith("cuda") and share > 1:
            budget, source = budget // share, f"{source}, shared by {share} ranks on this host"
    one = need(frames)
    basis = (
        f"fitted to CPU peak-RSS measurements of {preset if preset in load_fit()['presets'] else 'vggt-1b'} "
        f"({load_fit()['measured']})"
        + (
            "; on CUDA extrapolated from the CPU fit, not measured on a GPU"
            if device.startswith("cuda")
            else ""
        )
    )
    plan = InferPlan(
        frames=frames,
        image_size_hw=(h, w),
        device=device,
        dtype=dtype,
        preset=preset,
        budget_bytes=budget,
        budget_source=source,
        one_pass_bytes=one,
        mode="one-pass",
        reason="",
        basis=basis,
        world=world,
        frames_per_device=frames_per_device(frames, world),
    )
    usable = SAFETY * budget
    if chunk_size is not None and chunk_size < frames:
        k = overlap if overlap is not None else default_overlap(chunk_size)
        return _chunked(plan, chunk_size, k, need(chunk_size), "--chunk-size given")
    if one <= usable or frames <= 1:
        plan.reason = f"fits in {SAFETY:.0%} of the budget" if one <= usable else "a single frame"
        if one > usable:
            raise _too_big(plan, chunk)
        return plan
    if chunk == "off":
        raise _too_big(plan, chunk)
    size = _largest_chunk(need, frames, usable)
    k = overlap if overlap is not None else default_overlap(size)
    if size < 2 or size <= k:
        raise _too_big(plan, chunk, smallest=need(max(k + 1, 2)))
    size = balanced_chunk(frames, size, k)
    return _chunked(plan, size, k, need(size), f"one pass exceeds {SAFETY:.0%} of the budget")


def balanced_chunk(frames: int, largest: int, overlap: int) -> int:
    """The smallest chunk size that needs no more chunks than ``largest`` does: the chunks come out even.

    The largest chunk that fits can leave a sliver (40 frames in chunks of 39 would run 78 frames); as many
    chunks of even size cover the same frames with the least repeated work, and need less memory.
    """
    if frames <= largest:
        return largest
    n = math.ceil((frames - overlap) / (largest - overlap))
    return min(largest, math.ceil((frames - overlap) / n) + overlap)


def _chunked(plan: InferPlan, size: int, overlap: int, per_chunk: int, reason: str) -> InferPlan:
    plan.mode = "chunked"
    plan.chunk_size, plan.overlap, plan.chunk_bytes = size, overlap, per_chunk
    plan.chunks = chunk_ranges(plan.frames, size, overlap)
    plan.frames_per_device = frames_per_device(size, plan.world)
    plan.reason = reason
    return plan


def _too_big(plan: InferPlan, chunk: str, smallest: int | None = None) -> MemoryPlanError:
    h, w = plan.image_size_hw
    per = f" per device ({plan.world} devices)" if plan.world > 1 else ""
    what = (
        f"one pass over {plan.frames} frames at {w}x{h} needs ~{gib(plan.one_pass_bytes)}{per}"
        if smallest is None
        else f"even the smallest chunk at {w}x{h} needs ~{gib(smallest)}{per}"
    )
    hint = (
        "drop --chunk off (chunks of frames are aligned into one reconstruction), pass fewer frames, "
        "or raise --max-memory if the device has more"
        if chunk == "off"
        else "use a device with more memory, a lower resolution, bf16 (--dtype bf16) or a larger --max-memory"
    )
    return MemoryPlanError(
        f"{what}, but only {gib(plan.budget_bytes)} is available ({plan.budget_source}; "
        f"{SAFETY:.0%} of it is planned for)",
        hint,
    )


def settings_problems(
    *,
    max_memory: str | None,
    chunk: str,
    chunk_size: int | None,
    overlap: int | None,
    fps: float | None,
    every: int,
) -> list[Problem]:
    """Every bad scale setting of ``vggtctl infer`` (memory budget, chunks, video sampling), all at once."""
    problems: list[Problem] = []
    if chunk not in CHUNK_CHOICES:
        problems.append(Problem.of("chunk", f"allowed: {', '.join(CHUNK_CHOICES)}", chunk))
    if chunk == "off" and chunk_size is not None:
        problems.append(
            Problem.of("chunk_size", "conflicts with chunk off (one pass, never chunks)", chunk_size)
        )
    if overlap is not None and chunk_size is None and overlap < 1:
        problems.append(Problem.of("overlap", "must be >= 1 (a Sim(3) needs shared frames)", overlap))
    if chunk_size is not None:
        problems.extend(
            chunk_problems(chunk_size, overlap if overlap is not None else default_overlap(chunk_size))
        )
    if max_memory is not None:
        try:
            parse_memory(max_memory)
        except ConfigError as e:
            problems.extend(e.problems)
    if fps is not None:
        if not fps > 0:
            problems.append(Problem.of("fps", "must be > 0 (frames kept per second of video)", fps))
        elif every != 1:
            problems.append(Problem.of("fps", "conflicts with every (pick frames by time or by count)", fps))
    return problems

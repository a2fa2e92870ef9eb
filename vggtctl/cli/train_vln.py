"""`vggtctl train-vln`: JanusVLN-style training (Qwen2.5-VL + frozen VGGT), ``init-tiny`` and ``predict``.

``vggtctl train-vln --data ... [key=value ...]`` trains; ``vggtctl train-vln init-tiny --out DIR`` and
``vggtctl train-vln predict --checkpoint DIR --sample FILE`` are its two helpers. The trailing
``key=value`` overrides and the helpers share the positional slot, so the group's callback dispatches
them itself: a first word ``init-tiny`` or ``predict`` runs that helper with the words after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vggtctl.cli.errors import mapped_errors
from vggtctl.cli.launching import LaunchArgs, dry_run_or_launch
from vggtctl.cli.options import (
    DeepspeedOption,
    DeviceOption,
    DryRunOption,
    HostfileOption,
    JsonOption,
    Launcher,
    LauncherOption,
    MasterAddrOption,
    MasterPortOption,
    NnodesOption,
    NodeRankOption,
    NprocOption,
)
from vggtctl.cli.output import Output
from vggtctl.services.vln.config import SETTINGS  # plain dataclass: no torch

EPILOG = """\
Examples:

  vggtctl train-vln init-tiny --out tiny-qwen

  vggtctl train-vln --data trajectories/ --model tiny-qwen --vggt tiny --output-dir runs/vln --max-steps 20 image_width=112 merger_hidden=64

  vggtctl train-vln --data train_r2r_rxr.json --image-root data/ --output-dir runs/janus --epochs 1 grad_accum=8 lam=0.2

  vggtctl cache build --data trajectories/ --cache-dir vcache --model tiny --image-width 112 --dtype fp32
  vggtctl train-vln --data trajectories/ --model tiny-qwen --vggt tiny --cache-dir vcache --max-steps 20 image_width=112

  vggtctl train-vln predict --checkpoint runs/vln/export --sample sample.json

Helpers: `train-vln init-tiny --out DIR` (a tiny random Qwen2.5-VL folder with a local tokenizer),
`train-vln predict --checkpoint DIR --sample FILE` (the exported model on one sample). Settings
(key=value): lam, vggt_layer, merger_hidden, tile_spatial, train_llm, train_qwen_merger,
train_vggt_merger, lr_llm, lr_merger, weight_decay, warmup_ratio, max_grad_norm, batch_size,
grad_accum, grad_checkpointing, image_width, num_workers, prefetch_factor, pin_memory, log_steps,
save_steps, keep_checkpoints, final_save, seed, ds_cpu_adam, export_gather_mb, export_shard_mb
(docs/train-vln.md).
"""

INTERRUPT_HINT = "the newest checkpoint is intact: re-run the same command (resume=auto) to continue from it"
_OPTIONS = ("data", "image_root", "model", "vggt", "output_dir", "resume", "max_steps", "epochs", "device",
            "cache_dir", "cache_required")  # fmt: skip
# Settings without an option of their own are shown as their key=value name in errors.
_FLAGS = {name: ("--" + name.replace("_", "-") if name in _OPTIONS else name) for name in SETTINGS}

group = typer.Typer(
    name="train-vln",
    help="Train a vision-language navigation model: Qwen2.5-VL + frozen VGGT 3D features (JanusVLN).",
    epilog=EPILOG,
    invoke_without_command=True,
    no_args_is_help=False,
    add_completion=False,
    rich_markup_mode="rich",
)
# One single-command app per helper: Typer turns each into that command (its --help, its options).
init_tiny_app = typer.Typer(add_completion=False, rich_markup_mode="rich")
predict_app = typer.Typer(add_completion=False, rich_markup_mode="rich")


@group.callback()
def train_command(
    ctx: typer.Context,
    args: Annotated[
        list[str] | None,
        typer.Argument(
            help="key=value settings, or a helper: init-tiny ..., predict ...", show_default=False
        ),
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="JSON / JSONL file or trajectory folder.")
    ] = None,
    image_root: Annotated[
        str | None, typer.Option("--image-root", help="Where relative image paths of JSON data start.")
    ] = None,
    model: Annotated[
        str, typer.Option("--model", "-m", help="Qwen2.5-VL Hub id or local save_pretrained folder.")
    ] = "Qwen/Qwen2.5-VL-7B-Instruct",
    vggt: Annotated[
        str, typer.Option("--vggt", help="VGGT: Hub id, local file/folder, or 'tiny'.")
    ] = "facebook/VGGT-1B",
    output_dir: Annotated[
        str, typer.Option("--output-dir", "-o", help="The run directory.")
    ] = "runs/train-vln",
    resume: Annotated[
        str, typer.Option("--resume", help="auto: continue from the newest checkpoint; never.")
    ] = "auto",
    max_steps: Annotated[int, typer.Option("--max-steps", help="Optimizer steps (0: from --epochs).")] = 0,
    epochs: Annotated[
        float, typer.Option("--epochs", help="Passes over the data when --max-steps is 0.")
    ] = 1.0,
    device: DeviceOption = "auto",
    cache_dir: Annotated[
        str | None,
        typer.Option("--cache-dir", help="VGGT feature cache (vggtctl cache build): hits skip VGGT."),
    ] = None,
    cache_required: Annotated[
        bool,
        typer.Option(
            "--cache-required", help="With --cache-dir: a sample missing from the cache is an error."
        ),
    ] = False,
    deepspeed: DeepspeedOption = None,
    nproc_per_node: NprocOption = None,
    nnodes: NnodesOption = None,
    node_rank: NodeRankOption = None,
    master_addr: MasterAddrOption = None,
    master_port: MasterPortOption = None,
    launcher: LauncherOption = Launcher.auto,
    hostfile: HostfileOption = None,
    dry_run: DryRunOption = False,
    json_out: JsonOption = False,
) -> None:
    """Train Qwen2.5-VL with VGGT 3D features on navigation data; writes a run directory and an export."""
    words = list(args or [])
    if words and words[0] in _HELPERS:
        code = typer.main.get_command(_HELPERS[words[0]])(
            args=words[1:], prog_name=f"vggtctl train-vln {words[0]}", standalone_mode=False
        )
        if code:  # the helper's own exit code (its errors were reported already)
            raise typer.Exit(int(code))
        return
    launch = LaunchArgs(nproc_per_node, nnodes, node_rank, master_addr, master_port, launcher, hostfile)
    cache = {"cache_dir": cache_dir, "cache_required": cache_required}
    _train(words, data, image_root, model, vggt, output_dir, resume, max_steps, epochs, device, deepspeed,
           launch, dry_run, json_out, cache)  # fmt: skip


@mapped_errors(flags=_FLAGS, interrupted=INTERRUPT_HINT)
def _train(
    overrides: list[str], data: str | None, image_root: str | None, model: str, vggt: str, output_dir: str,
    resume: str, max_steps: int, epochs: float, device: str, deepspeed: str | None, launch: LaunchArgs,
    dry_run: bool, json_out: bool, cache: dict[str, Any],
) -> None:  # fmt: skip
    from vggtctl.launch import Worker
    from vggtctl.services.vln.config import VlnTrainConfig, apply_overrides

    config = apply_overrides(
        VlnTrainConfig(
            data=data or "", image_root=image_root, model=model, vggt=vggt, output_dir=output_dir,
            resume=resume, max_steps=max_steps, epochs=epochs, device=device, deepspeed=deepspeed, **cache,
        ),
        overrides,
    ).validate()  # fmt: skip
    # torchrun by default for several processes (the ZeRO config goes to the workers); in-process for one.
    plan = launch.plan(device=config.device, deepspeed=config.deepspeed, nccl=config.nccl)
    run_dir = Path(config.output_dir)
    worker_config = run_dir / "launch" / "train-vln.yaml"
    worker = Worker("vggtctl.services.vln.worker", ["--config", str(worker_config)])
    output = Output(json_mode=json_out)

    def write_config() -> None:
        from vggtctl.services.vln.worker import write_worker_config

        write_worker_config(config, worker_config)

    code = dry_run_or_launch(plan, worker, run_dir / "logs", output, dry_run=dry_run, before_launch=write_config,
                             document=lambda doc: {**doc, "config": _plain_config(config)})  # fmt: skip
    if code is None:
        from vggtctl.services.vln.train import train_vln

        try:
            result = train_vln(config, progress=output.progress())
        finally:
            output.close()
        output.result(result.to_dict(), lambda console: _render_train(console, result.to_dict()))
        return
    if code:
        raise typer.Exit(code)
    if dry_run:
        return
    import json

    status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    data = {
        "run_dir": str(run_dir),
        "export_dir": str(run_dir / "export"),
        "world_size": plan.world_size,
        **status,
    }
    output.result(data, lambda c: c.print(
        f"{status['state']} at step {status['step']} on {plan.world_size} processes; run: {run_dir}; "
        f"export: {run_dir / 'export'}", markup=False))  # fmt: skip


def _plain_config(config: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(config)


def _render_train(console: Any, r: dict[str, Any]) -> None:
    resumed = f" (resumed from step {r['resumed_from']})" if r["resumed_from"] is not None else ""
    loss = f", loss {r['loss']:.4f}" if r["loss"] is not None else ""
    console.print(f"trained {r['steps']} steps to {r['total_steps']}{resumed}{loss}", markup=False)
    if r["mean_step_time"] is not None:
        console.print(
            f"{r['mean_step_time']:.3f} s/it, {r['mean_data_time']:.3f} s/it waiting for data", markup=False
        )
    console.print(f"run: {r['run_dir']}", markup=False)
    console.print(f"export: {r['export_dir']}", markup=False)
    console.print(
        f"use it: vggtctl train-vln predict --checkpoint {r['export_dir']} --sample SAMPLE.json", markup=False
    )


@init_tiny_app.command("init-tiny")
@mapped_errors
def init_tiny_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (created).")],
    hidden_size: Annotated[
        int, typer.Option("--hidden-size", min=4, help="LLM width (a multiple of 4).")
    ] = 32,
    layers: Annotated[int, typer.Option("--layers", min=1, help="LLM decoder layers.")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random weights.")] = 0,
    tie_embeddings: Annotated[
        bool,
        typer.Option("--tie-embeddings", help="Share lm_head with the input embeddings (as Qwen2.5-VL-3B)."),
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Write a tiny random Qwen2.5-VL folder (model, local BPE tokenizer, image processor)."""
    from vggtctl.services.vln.tiny_qwen import write_tiny_qwen

    result = write_tiny_qwen(out, hidden_size=hidden_size, layers=layers, seed=seed,
                             tie_embeddings=tie_embeddings).to_dict()  # fmt: skip
    Output(json_mode=json_out).result(
        result,
        lambda c: c.print(
            f"wrote {result['path']}: tiny Qwen2.5-VL, {result['parameters']} parameters, "
            f"vocabulary {result['vocab_size']}; use it: --model {result['path']}",
            markup=False,
        ),
    )


@predict_app.command("predict")
@mapped_errors
def predict_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A train-vln export folder (RUN/export).")],
    sample: Annotated[
        Path, typer.Option("--sample", help="A one-record JSON file, or an episode folder (its last step).")
    ],
    vggt: Annotated[
        str | None, typer.Option("--vggt", help="VGGT source (default: the one trained with).")
    ] = None,
    device: DeviceOption = "auto",
    json_out: JsonOption = False,
) -> None:
    """Run the trained model on one sample and print the action it chooses."""
    from vggtctl.services.vln.predict import predict

    result = predict(checkpoint, sample, device=device, vggt=vggt).to_dict()

    def render(c: Any) -> None:
        c.print(result["action"], markup=False)
        scores = ", ".join(f"{k}={v:.3f}" for k, v in result["scores"].items())
        c.print(f"scores (log-probability): {scores}", markup=False)

    Output(json_mode=json_out).result(result, render)


_HELPERS = {"init-tiny": init_tiny_app, "predict": predict_app}


def register(app: typer.Typer) -> None:
    """Add ``train-vln`` to the root app."""
    app.add_typer(group, name="train-vln")

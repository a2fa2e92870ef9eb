"""`vggtctl finetune`: LoRA fine-tuning of VGGT on ETH3D-layout scenes, from one CPU to many nodes.

``vggtctl finetune merge RUN_DIR --out DIR`` writes base + adapter merged (facebook/VGGT-1B key layout).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vggtctl.cli.errors import mapped_errors
from vggtctl.cli.options import (
    DeepspeedOption,
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
    ScenesOption,
    split_list,
)
from vggtctl.cli.output import Output

EPILOG = """\
Examples:

  vggtctl finetune --list-presets

  vggtctl finetune --config tiny-smoke --data demo_data --output-dir runs/smoke

  vggtctl finetune --strategy b --subset facades --data ~/eth3d lora.rank=8 optimizer.lr=5e-5

  vggtctl finetune --nproc-per-node 8 --data ~/eth3d --output-dir runs/lora-b --dry-run

  vggtctl finetune merge runs/smoke --out merged/
"""

MERGE_EPILOG = """\
Examples:

  vggtctl finetune merge runs/lora-eth3d --out merged/

  vggtctl infer images/ --model merged/ --out out/
"""

INTERRUPTED = (
    "the newest checkpoint is in RUN/checkpoints/; re-run the same command (--resume auto) to continue"
)


@mapped_errors(interrupted=INTERRUPTED)
def finetune_command(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="Dotted overrides: lora.rank=8 optimizer.lr=5e-5 run.val_every=50 ...", show_default=False
        ),
    ] = None,
    strategy: Annotated[
        str | None,
        typer.Option("--strategy", help="a = depth head; b = aggregator 12-23 + depth head; c = all."),
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="A preset (see --list-presets) or a YAML file.")
    ] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Folder of ETH3D-layout scenes.")] = None,
    scenes: ScenesOption = None,
    subset: Annotated[str | None, typer.Option("--subset", help="Scene subset, e.g. facades.")] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Base model: Hub repo id, local weights, or 'tiny'.")
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "--output_dir", help="Run directory (default runs/finetune)."),
    ] = None,
    resume: Annotated[
        str,
        typer.Option("--resume", help="auto (newest complete checkpoint), never, or a checkpoint folder."),
    ] = "auto",
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", "--max_steps", min=1, help="Optimizer steps.")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Epochs (instead of --max-steps).")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda.")] = None,
    list_presets: Annotated[
        bool, typer.Option("--list-presets", help="List the shipped presets and exit.")
    ] = False,
    show_config: Annotated[
        bool, typer.Option("--show-config", help="Print the resolved config (after overrides) and exit.")
    ] = False,
    nproc_per_node: NprocOption = None,
    nnodes: NnodesOption = None,
    node_rank: NodeRankOption = None,
    master_addr: MasterAddrOption = None,
    master_port: MasterPortOption = None,
    launcher: LauncherOption = Launcher.auto,
    hostfile: HostfileOption = None,
    deepspeed: DeepspeedOption = None,
    dry_run: DryRunOption = False,
    json_out: JsonOption = False,
) -> None:
    """Fine-tune VGGT with LoRA (strategies a/b/c) on dense ETH3D ground truth; resumable; 1 GPU to many nodes."""
    args = list(overrides or [])
    if args and args[0] == "merge":
        raise typer.Exit(_merge(args[1:] + (["--json"] if json_out else [])))
    from vggtctl.services.finetune.config import config_dict, preset_names, preset_summary, resolve_config

    output = Output(json_mode=json_out)
    if list_presets:
        presets = {name: preset_summary(name) for name in preset_names()}
        output.result(
            {"presets": presets},
            lambda c: [c.print(f"{n:16s} {s}", markup=False) for n, s in presets.items()],
        )
        return
    flags: dict[str, Any] = {
        "strategy": strategy,
        "data.root": str(data) if data is not None else None,
        "data.subset": subset,
        "data.scenes": split_list(scenes) or None,
        "model": model,
        "output_dir": str(output_dir) if output_dir is not None else None,
        "run.max_steps": max_steps,
        "run.epochs": epochs,
        "device": device,
        "launch.deepspeed": deepspeed,
    }
    cfg = resolve_config(config, flags, args)
    if show_config:
        import yaml

        resolved = config_dict(cfg)
        output.result(
            resolved, lambda c: c.print(yaml.safe_dump(resolved, sort_keys=False), markup=False, end="")
        )
        return

    from vggtctl.cli.launching import LaunchArgs, show_dry_run
    from vggtctl.launch import Worker
    from vggtctl.services.finetune import service

    service.check_resume_value(resume)
    launch = LaunchArgs(nproc_per_node, nnodes, node_rank, master_addr, master_port, launcher, hostfile)
    plan = launch.plan(device=cfg.device, deepspeed=cfg.launch.deepspeed, nccl=cfg.launch.nccl)
    for warning in plan.warnings:
        output.warn(warning)
    run_dir = Path(cfg.output_dir)
    if dry_run:
        worker = Worker(service.WORKER, ["--run-dir", str(run_dir)])
        show_dry_run(
            plan, worker, run_dir / "logs", output, document=lambda doc: {**doc, "config": config_dict(cfg)}
        )
        return
    prepared = service.prepare(cfg, resume)
    if prepared.resume_from is not None:
        output.info(f"resuming from {prepared.resume_from}")
    output.info(f"run directory {prepared.run_dir} ({plan.backend}, world size {plan.world_size})")
    code = service.run_prepared(prepared, plan)
    status = _status(prepared.run_dir)
    output.result(
        {"run_dir": str(prepared.run_dir), "exit_code": code, "status": status},
        lambda c: c.print(
            f"{status.get('state', '?')}: step {status.get('step')}/{status.get('total_steps')} in "
            f"{prepared.run_dir}" + (f" ({status['message']})" if status.get("message") else ""),
            markup=False,
        ),
    )
    if code:
        raise typer.Exit(code)


def _status(run_dir: Path) -> dict[str, Any]:
    from vggtctl.runs import RunDir

    status = RunDir(run_dir, rank=0).read_status()
    return status.to_dict() if status else {}


def _merge(args: list[str]) -> int:
    from vggtctl.cli.errors import report_usage_error

    try:
        code = merge_app(args=args, prog_name="vggtctl finetune merge", standalone_mode=False)
    except typer.Exit as e:
        return int(e.exit_code)
    except Exception as e:
        if hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int):
            return report_usage_error(e)
        raise
    return code if isinstance(code, int) else 0


merge_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@merge_app.command(epilog=MERGE_EPILOG)
@mapped_errors
def merge(
    run_dir: Annotated[Path, typer.Argument(help="A finetune run directory or adapter folder.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for model.safetensors + meta.json.")],
    json_out: JsonOption = False,
) -> None:
    """Merge the run's LoRA adapter into its base model (facebook/VGGT-1B key layout, safetensors)."""
    from vggtctl.services.finetune.adapter import merge_run

    output = Output(json_mode=json_out)
    result = merge_run(run_dir, out)
    output.result(
        result,
        lambda c: c.print(f"merged weights: {result['weights']} ({result['keys']} keys)", markup=False),
    )


def register(app: typer.Typer) -> None:
    app.command(
        "finetune",
        epilog=EPILOG,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(finetune_command)

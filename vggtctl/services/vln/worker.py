"""What every rank of a launched ``train-vln`` runs: ``main(["--config", RUN_CONFIG.yaml])``.

The CLI writes the resolved config to a file and the launcher (:mod:`vggtctl.launch`) starts this module on
every process; each reads the same config and calls :func:`~vggtctl.services.vln.train.train_vln`, which
joins the process group. Errors are printed as ``Error:``/``Hint:`` into the rank's log and become the
worker's exit code (2 for bad settings, 1 for failures, 130 for Ctrl-C), which the launcher passes through.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, fields
from pathlib import Path

import yaml

from vggtctl.errors import EXIT_USAGE, VggtctlError
from vggtctl.runtime.dist import dist_info
from vggtctl.services.vln.config import VlnTrainConfig


def write_worker_config(config: VlnTrainConfig, path: Path) -> Path:
    """Save ``config`` where the workers read it."""
    from vggtctl.utils.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(asdict(config), sort_keys=False))
    return path


def read_worker_config(path: Path) -> VlnTrainConfig:
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    known = {f.name for f in fields(VlnTrainConfig)}
    return VlnTrainConfig(**{k: v for k, v in raw.items() if k in known})


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--config":
        print("usage: python -m vggtctl.services.vln.worker --config FILE", file=sys.stderr)
        return EXIT_USAGE
    from vggtctl.services.vln.train import train_vln

    try:
        result = train_vln(read_worker_config(Path(argv[1])))
    except VggtctlError as e:
        print(f"Error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"Hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    if dist_info().is_rank_zero:
        print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A real transformers Trainer run of a tiny randomly initialised GPT-2, for `vggtctl monitor`'s tests.

Trains 6 steps on CPU with logging_steps=1 (no downloads: the model is built from a config in code) and
prints what the Trainer prints. Its ``state.log_history`` goes to HISTORY as JSON, so a test can compare
what `vggtctl monitor` reads from the console output with what the Trainer reported.

    python tests/scripts/hf_trainer_tiny.py HISTORY.json > train.log 2>&1

Regenerate the committed fixture (tests/data/hf_trainer_5x.log and its history) with ``--fixture``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
FIXTURE_LOG = DATA / "hf_trainer_5x.log"
FIXTURE_HISTORY = DATA / "hf_trainer_5x_history.json"
STEPS = 6


def environment() -> dict[str, str]:
    """Offline, CPU only, unbuffered (what `nohup python train.py > log 2>&1` with PYTHONUNBUFFERED gives)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.update({"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_DISABLED": "true"})
    return env


def run(log: Path, history: Path) -> None:
    """Run this script in a fresh interpreter with stdout and stderr into ``log``, as a user's shell would."""
    with open(log, "wb") as f:
        subprocess.run([sys.executable, __file__, str(history)], stdout=f, stderr=subprocess.STDOUT,
                       env=environment(), check=True, timeout=120)  # fmt: skip


def train(history: Path) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0
    )
    model = GPT2LMHeadModel(config)

    class Tokens(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 32

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            x = torch.randint(0, 64, (16,), generator=torch.Generator().manual_seed(i))
            return {"input_ids": x, "labels": x}

    args = TrainingArguments(
        output_dir=str(history.parent / "trainer_out"),
        max_steps=STEPS,
        logging_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=False,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Tokens())
    trainer.train()
    history.write_text(json.dumps(trainer.state.log_history, indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--fixture"]:
        run(FIXTURE_LOG, FIXTURE_HISTORY)
        print(f"wrote {FIXTURE_LOG} and {FIXTURE_HISTORY}")
    else:
        train(Path(sys.argv[1]))

"""Real-format training-log samples (used by the other monitor tests) and what the parser reads from them.

The lines copy what the tools print: HF Trainer's tqdm bar redrawn with ``\\r`` and its metric dicts
printed through ``tqdm.write`` (which clears the bar first), DeepSpeed's engine and timer lines, torchrun's
``[rankN]:`` prefixes, the old ``monitor_training.sh`` output, and vggtctl's own step lines.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from vggtctl.services.monitor.parse import LogParser, MetricsEvent, NoteEvent, StepEvent, parse_metrics_jsonl

# (step, tqdm elapsed, tqdm rate in s/it) of the HF sample: 55 s/it like the NewJanusVLN run (28,710 steps).
HF_STEPS = [
    (1, "00:56", "56.12"),
    (2, "01:51", "55.20"),
    (3, "02:46", "54.80"),
    (4, "03:41", "55.01"),
    (5, "04:36", "55.40"),
    (6, "05:31", "54.90"),
    (7, "06:26", "55.10"),
    (8, "07:21", "55.30"),
    (9, "08:16", "54.70"),
    (10, "09:11", "55.05"),
    (11, "10:06", "55.00"),
    (12, "11:01", "55.01"),
]
HF_TOTAL = 28710
# HF logs the loss every 2 steps; one of them is NaN.
HF_LOSSES = {2: "1.2", 4: "1.1", 6: "1.0", 8: "0.95", 10: "nan", 12: "0.85"}


def _remaining(step: int, rate: float) -> str:
    left = int((HF_TOTAL - step) * rate)
    h, rest = divmod(left, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def hf_bar(step: int, elapsed: str, rate: str) -> str:
    return f"\r  0%|          | {step}/{HF_TOTAL} [{elapsed}<{_remaining(step, float(rate))}, {rate}s/it]"


def hf_trainer_log(end_with_partial_dict: bool = False) -> bytes:
    """HF Trainer run redirected to a file: tqdm bar redraws (``\\r``, no newline) and metric dicts."""
    out = [
        "[INFO|trainer.py:2134] 2026-01-26 19:00:44,120 >> ***** Running training *****\n",
        "[INFO|trainer.py:2135] 2026-01-26 19:00:44,120 >>   Num examples = 612,492\n",
        "[INFO|trainer.py:2139] 2026-01-26 19:00:44,121 >>   Total optimization steps = 28,710\n",
        "\x1b[33mWARNING\x1b[0m: `use_cache=True` is incompatible with gradient checkpointing.\n",
        f"\r  0%|          | 0/{HF_TOTAL} [00:00<?, ?it/s]",
    ]
    for step, elapsed, rate in HF_STEPS:
        out.append(hf_bar(step, elapsed, rate))
        if step in HF_LOSSES:
            # tqdm.write: clear the bar, print the dict, redraw the bar.
            out.append(
                "\r" + " " * 60 + f"\r{{'loss': {HF_LOSSES[step]}, 'grad_norm': 3.21, "
                f"'learning_rate': {2e-5 - step * 1e-7:.3e}, 'epoch': {step / 9570:.4f}}}\n"
            )
            out.append(hf_bar(step, elapsed, rate))
    if end_with_partial_dict:
        out.append("\r" + " " * 60 + "\r{'loss': 0.8")
    return "".join(out).encode()


def deepspeed_log() -> bytes:
    """DeepSpeed engine with steps_per_print=10: config dump, then log_dist and timer lines every 10 steps."""
    lines = [
        "[2026-01-26 19:00:00,000] [INFO] [config.py:1000:print] DeepSpeedEngine configuration:",
        "[2026-01-26 19:00:00,001] [INFO] [config.py:1004:print]   train_batch_size ............. 64",
        "[2026-01-26 19:00:00,001] [INFO] [config.py:1004:print]   train_micro_batch_size_per_gpu  1",
    ]
    for step, clock, lr in (
        (10, "19:10:00", "1.9e-05"),
        (20, "19:19:10", "1.8e-05"),
        (30, "19:28:30", "1.7e-05"),
        (40, "19:37:40", "1.6e-05"),
    ):
        lines.append(
            f"[2026-01-26 {clock},000] [INFO] [logging.py:96:log_dist] [Rank 0] step={step}, skipped=0, "
            f"lr=[{lr}], mom=[(0.9, 0.999)]"
        )
        lines.append(
            f"[2026-01-26 {clock},100] [INFO] [timer.py:260:stop] epoch=0/micro_step={step * 8}/global_step={step}, "
            "RunningAvgSamplesPerSec=1.16, CurrSamplesPerSec=1.17, MemAllocated=13.2GB, MaxMemAllocated=20.1GB"
        )
    return ("\n".join(lines) + "\n").encode()


def torchrun_log(prefix: str = "rank") -> bytes:
    """torchrun with 2 ranks that both draw a tqdm bar (accelerate without main-process-only bars):
    rank 0 at 2.0 s/it, rank 1 at 2.5 s/it; torchrun prefixes every line with ``[rankN]:``."""
    out = []
    for step in range(1, 7):
        out.append(
            f"[{prefix}0]:\r  5%|▌         | {step}/100 [00:{2 * step:02d}<03:{20 - 2 * step:02d}, 2.00s/it]\n"
        )
        out.append(f"[{prefix}1]:\r  5%|▌         | {step}/100 [00:{int(2.5 * step):02d}<04:00, 2.50s/it]\n")
        out.append(
            f"[{prefix}1]:/usr/lib/python3/site-packages/torch/utils/checkpoint.py:91: UserWarning: None of the inputs\n"
        )
    return "".join(out).encode()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


# -- what the parser makes of them ----------------------------------------------------------------------------


def test_hf_trainer_bars_and_dicts() -> None:
    parser = LogParser()
    events = parser.parse(hf_trainer_log())
    steps = [e for e in events if isinstance(e, StepEvent)]
    # 13 bar draws (0..12) + 6 redraws after the dicts.
    assert len(steps) == 19
    assert steps[0] == StepEvent(0, HF_TOTAL, 0.0, None, "tqdm", None, False)
    assert steps[1] == StepEvent(1, HF_TOTAL, 56.0, 56.12, "tqdm", None, False)
    assert steps[-1] == StepEvent(12, HF_TOTAL, 661.0, 55.01, "tqdm", None, False)
    metrics = [e for e in events if isinstance(e, MetricsEvent)]
    assert [m.values["loss"] for m in metrics if not math.isnan(m.values["loss"])] == [
        1.2,
        1.1,
        1.0,
        0.95,
        0.85,
    ]
    assert metrics[0].values == {"loss": 1.2, "grad_norm": 3.21, "lr": 1.98e-05, "epoch": 0.0002}
    assert parser.formats == {"tqdm", "hf-dict"}


def test_the_total_steps_banner_is_not_a_step() -> None:
    assert LogParser().parse(b"[INFO|trainer.py:2139] >>   Total optimization steps = 28,710\n") == []


def test_it_per_second_form_and_ansi_colours() -> None:
    line = (
        b"\x1b[32mTraining\x1b[0m:  40%|\x1b[34m####\x1b[0m      | 40/100 [00:10<00:15, 3.99it/s, loss=0.5]\n"
    )
    (ev,) = LogParser().parse(line)
    assert isinstance(ev, StepEvent)
    assert (ev.step, ev.total, ev.time) == (40, 100, 10.0)
    assert ev.sec_per_it == 1 / 3.99


def test_deepspeed_lines() -> None:
    events = LogParser().parse(deepspeed_log())
    assert events[0] == NoteEvent("batch_size", "train_batch_size", None, 64.0)
    step10 = events[1]
    assert isinstance(step10, StepEvent)
    assert (step10.step, step10.total, step10.source, step10.wall) == (10, None, "log", True)
    assert events[2] == MetricsEvent({"lr": 1.9e-05}, None, "log")
    timer = events[3]
    assert isinstance(timer, StepEvent) and timer.step == 10
    assert timer.time == pytest.approx(step10.time + 0.1, abs=1e-6)  # type: ignore[operator]
    assert events[4] == MetricsEvent({"samples_per_s": 1.17}, None, "log")


def test_torchrun_prefixes_set_the_rank() -> None:
    for prefix in ("rank", "default"):
        parser = LogParser()
        steps = [e for e in parser.parse(torchrun_log(prefix)) if isinstance(e, StepEvent)]
        assert [(e.rank, e.step) for e in steps[:4]] == [(0, 1), (1, 1), (0, 2), (1, 2)]
        assert steps[3].sec_per_it == 2.5
        assert "torchrun" in parser.formats


def test_monitor_script_and_vggtctl_lines() -> None:
    data = (
        b"[2026-02-02 17:30:00] Step: 150 | Speed: 18.5s/it | Throughput: 0.54 steps/s\n"
        b"2026-02-02T17:30:10.250Z step 151/28710 loss=0.91 lr=2e-05 step_time=18.2 data_time=4.5 samples=9664\n"
    )
    a, b, c = LogParser().parse(data)
    assert a == StepEvent(150, None, 1770053400.0, 18.5, "log", None, True)
    assert b == StepEvent(151, 28710, 1770053410.25, 18.2, "log", None, True)
    assert c == MetricsEvent({"loss": 0.91, "lr": 2e-05, "data_time": 4.5, "samples": 9664.0}, None, "log")


def test_traceback_gives_the_exception_line_of_its_rank() -> None:
    data = (
        b"[rank1]: Traceback (most recent call last):\n"
        b'[rank1]:   File "train.py", line 3, in <module>\n'
        b"[rank0]: RuntimeError: this line belongs to another rank\n"
        b"[rank1]:     loss.backward()\n"
        b"[rank1]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    )
    (ev,) = LogParser().parse(data)
    assert ev == NoteEvent(
        "exception", "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", 1
    )


def test_hf_final_dict_marks_the_end() -> None:
    (ev,) = LogParser().parse(
        b"{'train_runtime': 1234.5, 'train_samples_per_second': 5.1, 'train_loss': 0.9, 'epoch': 3.0}\n"
    )
    assert ev == NoteEvent("finished", "train_runtime", None, 1234.5)


def test_metrics_jsonl_records() -> None:
    data = b'{"step": 1, "time": 100.0, "loss": NaN, "learning_rate": 1e-4, "step_time": 2.0}\n[1]\n{"step": "x"}\n'
    events, bad = parse_metrics_jsonl(data)
    assert bad == 2
    step, metrics = events
    assert step == StepEvent(1, None, 100.0, 2.0, "metrics", 0, True)
    assert (
        isinstance(metrics, MetricsEvent)
        and math.isnan(metrics.values["loss"])
        and metrics.values["lr"] == 1e-4
    )

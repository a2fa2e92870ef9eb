"""Training-log bytes → events (progress, metrics, notes).

Works on bytes and only looks closely at lines that contain a marker (tqdm's ``<``, ``{``, ``step``,
``Traceback``...): markers are found by ``bytes.find`` in C, so output that is not progress costs little. Lines are split at ``\\n`` and ``\\r`` (tqdm redraws a bar with ``\\r``), ANSI colour
codes are removed, and torchrun's ``[rank3]:`` / ``[default3]:`` prefixes and DeepSpeed's ``[Rank 3]`` set
the rank of a line.
"""

from __future__ import annotations

import calendar
import json
import math
import re
from dataclasses import dataclass

FORMATS_TRIED = (
    "tqdm progress bars (HF Trainer, DeepSpeed, accelerate): '12/28710 [10:23<440:12:00, 55.01s/it]'",
    "HF Trainer metric dicts: \"{'loss': 0.91, 'learning_rate': 2e-05, 'epoch': 0.01}\" "
    "(transformers 5.x quotes the values: \"{'loss': '0.91', ...}\")",
    "step lines: DeepSpeed 'step=10, skipped=0, lr=[2e-05]', 'Step: 150 | Speed: 18.5s/it', "
    "vggtctl 'step 150/28710 loss=0.91'",
    "torchrun '[rank0]:' prefixes on any of the above",
    'vggtctl metrics.jsonl records: {"step": 150, "time": ..., "loss": 0.91}',
)


@dataclass(slots=True)
class StepEvent:
    """A progress update: the run reached ``step``.

    Attributes:
        step: Steps done.
        total: Planned steps, when the line says.
        time: Seconds on the series' clock: tqdm's elapsed time (``wall`` False) or a UNIX time from a
            timestamp (``wall`` True); None when the line has no time.
        sec_per_it: Seconds per step as the line reports it (tqdm rate, ``step_time``), if any.
        source: ``tqdm``, ``log`` (step lines) or ``metrics`` (metrics.jsonl).
        rank: Rank that printed it, None when unknown.
        wall: Whether ``time`` is a wall-clock timestamp.
    """

    step: int
    total: int | None
    time: float | None
    sec_per_it: float | None
    source: str
    rank: int | None
    wall: bool


@dataclass(slots=True)
class MetricsEvent:
    """Logged values (``loss``, ``lr``, ``data_time``, ``step_time``, ``samples``, ``samples_per_s``,
    ``batch_size``, ``grad_norm``, ``epoch``, ``eval_loss``), attached to the current step."""

    values: dict[str, float]
    rank: int | None
    source: str


@dataclass(slots=True)
class NoteEvent:
    """Something that is not a step: ``exception`` (text: the exception line after a traceback),
    ``finished`` (HF Trainer's final ``train_runtime`` dict), ``batch_size`` (DeepSpeed's config dump)."""

    kind: str
    text: str
    rank: int | None
    value: float | None = None


Event = StepEvent | MetricsEvent | NoteEvent

# Bytes that start a closer look. Single bytes are found with memchr at memory speed: "<" is in every tqdm
# bar ("[10:23<440:12:00, 55.01s/it]"), "{" opens HF's dicts; "tep" finds step lines (step=, Step:,
# global_step=); the long ones are rare and quick to skip through.
_MARKERS = (b"<", b"{", b"tep", b"Traceback (most recent call last)", b"train_batch_size")
_ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]")
_RANK_PREFIX = re.compile(rb"\[(?:rank|default|[A-Za-z_]+?)(\d+)\]: ?")
_TIMESTAMP = re.compile(rb"\s*\[?(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,6}))?")
# tqdm's "{n}/{total} [{elapsed}<{remaining}, {rate}{postfix}]", searched for in a few dozen bytes around
# the "<" that marked it.
_TQDM = re.compile(
    rb"(\d+)/(\d+) ?\[(?:(\d+):)?(\d+):(\d\d)<(?:\d+(?::\d\d)+|\?),\s*(?:(\d+(?:\.\d*)?)([kM]?)(s/it|it/s)|\?(?:s/it|it/s))(?=[,\]])"
)
_NUMBER = rb"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf(?:inity)?"
# transformers 4.x prints the log dict's floats as floats ('loss': 1.8183), 5.x as '%.4g' strings
# ('loss': '1.818'); a value counts only when it ends where the pair ends, so 'run': '12abc' is no number.
_DICT_PAIR = re.compile(rb"'([\w/.-]+)': '?(" + _NUMBER + rb")'?(?=\s*[,}])", re.IGNORECASE)
_STEP = re.compile(rb"(?:\bglobal_step|\b[Ss]tep)\b\s*[:=]?\s*(\d+)(?:\s*/\s*(\d+))?")
_KEY_VALUE = re.compile(rb"([A-Za-z_][\w]*)\s*[=:]\s*\[?\s*(" + _NUMBER + rb")\s*(s/it|it/s)?", re.IGNORECASE)
_BATCH = re.compile(rb"\btrain_batch_size\b\W{1,80}?(\d+)")

# Names users' logs give a value → the name the summary uses.
_KEYS = {
    "loss": "loss",
    "lr": "lr",
    "learning_rate": "lr",
    "data_time": "data_time",
    "step_time": "step_time",
    "samples": "samples",
    "batch_size": "batch_size",
    "samples_per_s": "samples_per_s",
    "currsamplespersec": "samples_per_s",
    "grad_norm": "grad_norm",
    "epoch": "epoch",
    "eval_loss": "eval_loss",
}
_SPEED_KEYS = frozenset({"speed", "step_time", "time_per_step"})

_day_start: dict[tuple[int, int, int], int] = {}


def _timestamp(m: re.Match[bytes]) -> float:
    """Seconds since the epoch of a log timestamp, read as UTC (only differences matter)."""
    y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    key = (y, mo, d)
    base = _day_start.get(key)
    if base is None:
        base = _day_start[key] = calendar.timegm((y, mo, d, 0, 0, 0))
    t = base + int(m.group(4)) * 3600 + int(m.group(5)) * 60 + int(m.group(6))
    frac = m.group(7)
    return t + int(frac) / 10 ** len(frac) if frac else float(t)


def _float(text: bytes) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


class LogParser:
    """Turns chunks of a text log into events, remembering which formats it recognised.

    Args:
        rank: The rank every line belongs to (a per-rank log file); None to read ``[rankN]:`` prefixes.
        bar_stride: Read only every n-th tqdm bar (a thinned pass over a huge log for a plot).
    """

    def __init__(self, rank: int | None = None, bar_stride: int = 1) -> None:
        self.rank = rank
        self.bar_stride = bar_stride
        self.formats: set[str] = set()
        self._bars = 0

    def parse(self, data: bytes) -> list[Event]:
        """Events of ``data``, which must hold whole lines (the caller keeps a partial last line back).

        Args:
            data: Log bytes; lines end with ``\\n`` or ``\\r``.

        Returns:
            The events in file order.
        """
        hits: list[int] = []
        for marker in _MARKERS:
            i = data.find(marker)
            while i >= 0:
                hits.append(i)
                i = data.find(marker, i + 1)
        hits.sort()
        events: list[Event] = []
        done_until = -1
        n = len(data)
        for i in hits:
            if i < done_until:
                continue
            if data[i] == 60:  # "<": most hits in a busy log are tqdm bars; read them in place
                self._bars += 1
                if self.bar_stride > 1 and self._bars % self.bar_stride:
                    continue
                end = self._tqdm_at(data, i, events)
                if end:
                    done_until = end
                    continue
            line_start = data.rfind(b"\n", 0, i) + 1
            start = max(line_start, data.rfind(b"\r", line_start, i) + 1)
            end_n = data.find(b"\n", i)
            if end_n < 0:
                end_n = n
            end_r = data.find(b"\r", i, end_n)
            end = end_r if end_r >= 0 else end_n
            done_until = end
            rank = self.rank
            if data.startswith(b"[", line_start):
                m = _RANK_PREFIX.match(data, line_start)
                if m:
                    self.formats.add("torchrun")
                    if rank is None:
                        rank = int(m.group(1))
                    if start == line_start:
                        start = m.end()
            self._segment(data, start, end, rank, events)
        return events

    def _rank_at(self, data: bytes, pos: int) -> int | None:
        """Rank of the line holding ``pos`` (its ``[rankN]:`` prefix), unless the parser has a fixed rank."""
        if self.rank is not None:
            return self.rank
        line_start = data.rfind(b"\n", 0, pos) + 1
        if data.startswith(b"[", line_start):
            m = _RANK_PREFIX.match(data, line_start)
            if m:
                self.formats.add("torchrun")
                return int(m.group(1))
        return None

    def _tqdm_at(self, data: bytes, lt: int, events: list[Event], rank: int | None = None) -> int:
        """A tqdm bar whose ``<`` is at ``lt``: appends its event and returns where it ends (0: not one).
        ``rank`` None: from the line's prefix."""
        bracket = data.rfind(b"[", max(0, lt - 24), lt)
        if bracket < 0:
            return 0
        m = _TQDM.search(data, max(0, bracket - 40), lt + 64)
        while m is not None and m.end() <= lt:  # a shorter bar just before this one
            m = _TQDM.search(data, m.end(), lt + 64)
        if m is None or m.start() > lt:
            return 0
        step, total, hours, minutes, seconds, rate, prefix, form = m.groups()
        spi = None
        if rate:
            value = float(rate) * (1000.0 if prefix == b"k" else 1e6 if prefix == b"M" else 1.0)
            spi = value if form == b"s/it" else (1.0 / value if value > 0 else None)
        elapsed = (int(hours) * 3600 if hours else 0) + int(minutes) * 60 + int(seconds)
        events.append(
            StepEvent(
                int(step),
                int(total),
                float(elapsed),
                spi,
                "tqdm",
                self._rank_at(data, m.start()) if rank is None else rank,
                False,
            )
        )
        self.formats.add("tqdm")
        return m.end()

    def _segment(self, buf: bytes, a: int, b: int, rank: int | None, events: list[Event]) -> None:
        if buf.find(b"\x1b", a, b) >= 0:
            buf = _ANSI.sub(b"", buf[a:b])
            a, b = 0, len(buf)
        lt = buf.find(b"<", a, b)
        if lt >= 0 and self._tqdm_at(buf, lt, events, rank):
            return
        if buf.find(b"{'", a, b) >= 0:
            pairs = _DICT_PAIR.findall(buf, a, b)
            if pairs:
                self._dict(pairs, rank, events)
                return
        if buf.find(b"Traceback (most recent call last)", a, b) >= 0:
            events.append(NoteEvent("exception", self._exception_after(buf, b, rank), rank))
            return
        if buf.find(b"train_batch_size", a, b) >= 0:
            m = _BATCH.search(buf, a, b)
            if m:
                events.append(NoteEvent("batch_size", "train_batch_size", rank, float(m.group(1))))
                return
        m = _STEP.search(buf, a, b)
        if m:
            self._step_line(buf, a, b, m, rank, events)

    def _dict(self, pairs: list[tuple[bytes, bytes]], rank: int | None, events: list[Event]) -> None:
        self.formats.add("hf-dict")
        raw = {k.decode(): _float(v) for k, v in pairs}
        if "train_runtime" in raw:
            events.append(NoteEvent("finished", "train_runtime", rank, raw["train_runtime"]))
            return
        values = {_KEYS[k]: v for k, v in raw.items() if k in _KEYS}
        if values:
            events.append(MetricsEvent(values, rank, "log"))

    def _step_line(
        self, buf: bytes, a: int, b: int, m: re.Match[bytes], rank: int | None, events: list[Event]
    ) -> None:
        ts = _TIMESTAMP.match(buf, a)
        when = _timestamp(ts) if ts else None
        values: dict[str, float] = {}
        spi = None
        for key, number, unit in _KEY_VALUE.findall(buf, m.end(), b):
            k = key.decode().lower()
            v = _float(number)
            if unit:
                if k in _SPEED_KEYS or k.endswith("speed"):
                    spi = v if unit.lower() == b"s/it" else (1.0 / v if v > 0 else None)
                continue
            name = _KEYS.get(k)
            if name == "step_time":
                spi = v
            elif name is not None:
                values[name] = v
        self.formats.add("step-line")
        total = int(m.group(2)) if m.group(2) else None
        events.append(StepEvent(int(m.group(1)), total, when, spi, "log", rank, when is not None))
        if values:
            events.append(MetricsEvent(values, rank, "log"))

    @staticmethod
    def _exception_after(buf: bytes, pos: int, rank: int | None, max_lines: int = 200) -> str:
        """The exception line closing the traceback that starts at ``pos`` (first unindented line)."""
        for _ in range(max_lines):
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            pos = nl + 1
            end = buf.find(b"\n", pos)
            line = buf[pos : end if end >= 0 else len(buf)].rstrip(b"\r")
            m = _RANK_PREFIX.match(line)
            if m:
                if rank is not None and int(m.group(1)) != rank:
                    continue
                line = line[m.end() :]
            if line[:1] in (b" ", b"\t") or not line.strip() or line.startswith(b"Traceback"):
                continue
            if line.startswith((b"The above exception", b"During handling")):
                continue
            return _ANSI.sub(b"", line).decode("utf-8", "replace").strip()[:300]
        return "Traceback (most recent call last)"


def parse_metrics_jsonl(data: bytes, rank: int | None = 0) -> tuple[list[Event], int]:
    """Events of whole ``metrics.jsonl`` lines.

    Args:
        data: Complete lines of the file.
        rank: The rank that wrote it (rank 0 for run directories).

    Returns:
        ``(events, bad_lines)``: lines that are not a JSON object with an integer ``step`` are counted, not
        raised.
    """
    events: list[Event] = []
    bad = 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1
            continue
        step = record.get("step") if isinstance(record, dict) else None
        if isinstance(step, bool) or not isinstance(step, int):
            bad += 1
            continue
        when = record.get("time")
        spi = record.get("step_time")
        total = record.get("total_steps")
        events.append(
            StepEvent(
                step,
                total if isinstance(total, int) else None,
                float(when) if isinstance(when, (int, float)) else None,
                float(spi) if isinstance(spi, (int, float)) else None,
                "metrics",
                rank,
                True,
            )
        )
        values = {
            _KEYS[k]: float(v)
            for k, v in record.items()
            if k in _KEYS
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and _KEYS[k] != "step_time"
        }
        if values:
            events.append(MetricsEvent(values, rank, "metrics"))
    return events, bad

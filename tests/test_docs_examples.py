"""The console examples in docs/ are real: each one runs here and must print what the doc shows.

Convention (docs/README.md): a fenced block tagged ``console`` holds ``$ command`` lines, each followed by
the output it prints (stderr, then stdout: progress and stage messages come before results). Blocks of one
doc run in order, in one fresh folder, with the seeded tiny model and synthetic data, offline. Illustrative
blocks that cannot run here (real ETH3D, a GPU, a server) are tagged ``text`` instead.

Compared modulo what legitimately varies: the run folder (shown as /tmp/vggtctl-demo, the fake home as
/home/me), timings (``1.23s``, ``0.4`` in a seconds column), free disk space. In the doc, a line ``...``
stands for any number of lines and ``...`` inside a line for any text.

``VGGTCTL_UPDATE_DOCS=1 pytest tests/test_docs_examples.py`` rewrites the output of every block that no
longer matches with what the tool printed (review the diff; re-add ``...`` where output varies).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DEMO = "/tmp/vggtctl-demo"
HOME = "/home/me"
_FENCE = re.compile(r"^```console[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


@dataclass
class Example:
    command: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Block:
    doc: Path
    start: int  # offset of the block's body in the doc
    end: int
    examples: list[Example]


def parse_blocks(doc: Path) -> list[Block]:
    """The ``console`` blocks of ``doc``: commands (``\\`` continuations joined) and their output lines."""
    text = doc.read_text()
    blocks = []
    for m in _FENCE.finditer(text):
        examples: list[Example] = []
        pending = ""
        for line in m.group(1).splitlines():
            if pending:
                pending += " " + line.strip()
            elif line.startswith("$ "):
                pending = line[2:].strip()
            elif examples:
                examples[-1].expected.append(line.rstrip())
                continue
            if pending.endswith("\\"):
                pending = pending[:-1].rstrip()
                continue
            if pending:
                examples.append(Example(pending))
                pending = ""
        for ex in examples:
            while ex.expected and not ex.expected[-1]:
                ex.expected.pop()
        blocks.append(Block(doc, m.start(1), m.end(1), examples))
    return blocks


_TIMING = [
    (re.compile(r"\b\d+(\.\d+)?s\b"), "<t>s"),  # 1.23s
    (re.compile(r"\bin \d+(\.\d+)? s\b"), "in <t> s"),  # downloaded 2.4 MB in 1.9 s
    (re.compile(r"\(free [\d.]+ [KMGT]?B\)"), "(free <size>)"),
    (re.compile(r"│\s+\d+\.\d\s+│$"), "│ <t> │"),  # the seconds column of download tables
]


def normalise(line: str) -> str:
    line = line.rstrip()
    for pattern, repl in _TIMING:
        line = pattern.sub(repl, line)
    return line


def _line_matches(expected: str, actual: str) -> bool:
    if "..." not in expected:
        return expected == actual
    parts = [re.escape(p) for p in expected.split("...")]
    return re.fullmatch(".*".join(parts), actual) is not None


def matches(expected: list[str], actual: list[str]) -> bool:
    """``expected`` against ``actual`` (both normalised); a ``...`` line matches any run of lines."""
    exp = [normalise(e) for e in expected]
    act = [normalise(a) for a in actual]

    def go(i: int, j: int) -> bool:
        if i == len(exp):
            return j == len(act)
        if exp[i].strip() == "...":
            return any(go(i + 1, k) for k in range(j, len(act) + 1))
        return j < len(act) and _line_matches(exp[i], act[j]) and go(i + 1, j + 1)

    return go(0, 0)


def _environment(work: Path) -> dict[str, str]:
    shim = work.parent / "bin"
    shim.mkdir(exist_ok=True)
    script = shim / "vggtctl"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m vggtctl "$@"\n')
    script.chmod(0o755)
    python = shim / "python"  # as in the user's activated venv
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    home = work / "home"
    home.mkdir(exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VGGTCTL_", "HF_", "XDG_", "CUDA", "RANK", "LOCAL_RANK", "PYTEST"))
    }
    env.update(
        PATH=f"{shim}:{env.get('PATH', '/usr/bin:/bin')}",
        PYTHONPATH=str(ROOT),
        HOME=str(home),
        HF_HUB_OFFLINE="1",
        COLUMNS="100",
        TERMINAL_WIDTH="100",
        NO_COLOR="1",
        OMP_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",
    )
    return env


def run_example(command: str, work: Path, env: dict[str, str]) -> tuple[int, list[str]]:
    """Run ``command`` in ``work`` with bash; stderr then stdout, with the demo paths put back."""
    proc = subprocess.run(
        ["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    text = proc.stderr + proc.stdout
    text = text.replace(str(work / "home"), HOME).replace(str(work), DEMO)
    return proc.returncode, [line.rstrip() for line in text.splitlines()]


DOC_FILES = sorted(p for p in DOCS.glob("*.md") if parse_blocks(p))


def test_docs_have_console_examples() -> None:
    # The examples this test guards: if the convention changes, it must not silently test nothing.
    names = {p.name for p in DOC_FILES}
    assert {"download.md", "infer.md", "evaluate.md", "datasets.md"} <= names


def test_matcher_semantics() -> None:
    assert matches(["a", "...", "d"], ["a", "b", "c", "d"]) and matches(["a", "...", "b"], ["a", "b"])
    assert not matches(["a", "d"], ["a", "b", "d"])
    assert matches(["[load model] 4.47s", "took ... frames"], ["[load model] 0.91s", "took 6 more frames"])
    assert not matches(["sha256: b5c7"], ["sha256: 97dd"])


@pytest.mark.slow  # every example is a real run: a few seconds each, ~1 min for all docs on 2 cores
@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_console_examples_print_what_the_doc_shows(doc: Path, tmp_path: Path) -> None:
    work = tmp_path / "vggtctl-demo"
    work.mkdir()
    env = _environment(work)
    update = os.environ.get("VGGTCTL_UPDATE_DOCS") == "1"
    failures: list[str] = []
    replacements: list[tuple[Block, str]] = []
    for block in parse_blocks(doc):
        body: list[str] = []
        stale = False
        for ex in block.examples:
            code, actual = run_example(ex.command, work, env)
            shows_error = any(e.startswith("Error:") for e in ex.expected)
            ok = matches(ex.expected, actual) and (code == 0 or shows_error)
            if not ok:
                stale = True
                failures.append(
                    f"{doc.name}: $ {ex.command}\n  exit {code}\n--- doc\n"
                    + "\n".join(ex.expected)
                    + "\n--- tool\n"
                    + "\n".join(actual)
                )
            body += [f"$ {ex.command}", *(actual if not ok else ex.expected), ""]
        if stale:
            replacements.append((block, "\n".join(body).rstrip("\n") + "\n"))
    if update and replacements:
        text = doc.read_text()
        for block, body in sorted(replacements, key=lambda r: -r[0].start):
            text = text[: block.start] + body + text[block.end :]
        doc.write_text(text)
    assert not failures, "\n\n".join(failures)

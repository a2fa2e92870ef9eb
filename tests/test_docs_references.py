"""What the docs name exists: repository paths, ``vggtctl.x.y`` names, and every flag of the commands they show.

Files move (``services/eth3d.py`` became ``vggtctl/data/eth3d.py``) and flags get renamed while the prose
that names them stays put. This reads docs/*.md and README.md (and the shell scripts of examples/ for the
commands) and checks, without running anything:

- every backticked repository path (``vggtctl/...``, ``tests/...::test_name``, ``benchmarks/...``,
  ``examples/...``, ``docs/...``, and the loader table's ``services/hub.py``, relative to ``vggtctl/``)
  exists; ``benchmarks/results/`` holds run outputs and is not checked;
- every page of docs/ is listed in README.md and docs/README.md;
- every dotted ``vggtctl.a.b`` name (prose, backticks, ``from vggtctl.a import b`` in code blocks) imports;
- every ``vggtctl ...`` command line (fenced blocks, backticked spans, example scripts) names a real
  subcommand, and each ``--flag`` it shows is one of that subcommand's options; every flag shown after a
  ``benchmarks/*.py`` or ``examples/*.py`` script is one its argument parser declares; every ``key=value``
  setting shown for train-vln and finetune is a field of their config dataclass.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
SCRIPTS = sorted((ROOT / "examples").glob("*.sh")) + [ROOT / "benchmarks" / "gpu_check.sh"]
_TICKS = re.compile(r"`([^`\n]+)`")
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
_PATH = re.compile(r"^(vggtctl|tests|benchmarks|examples|docs)/[\w./*-]*$")
_PKG_RELATIVE = re.compile(r"^(cli|data|io|launch|models|runs|runtime|services|utils)/[\w/]+\.py$")
_DOTTED = re.compile(r"(?<![\w/.-])vggtctl(?:\.[A-Za-z_]\w*)+")
_FROM_IMPORT = re.compile(r"^\s*(?:>>> )?from (vggtctl[\w.]*) import \(?([\w, ]+)", re.M)
_SCRIPT = re.compile(r"\b((?:benchmarks|examples)/\w+\.py|bench_\w+\.py)\b([^`#|;\n]*)")
_ROOT_OPTIONS = {"--debug", "--quiet", "-q", "--version", "--help", "-h"}
_SETTING = re.compile(r"^([a-z_][\w.]*)=")
# The commands whose positional key=value words are settings, and the dataclass that holds them.
_SETTINGS = {
    "vggtctl train-vln": ("vggtctl.services.vln.config", "VlnTrainConfig", "docs/train-vln.md"),
    "vggtctl finetune": ("vggtctl.services.finetune.config", "FinetuneConfig", "docs/finetune.md"),
}


def _where(doc: Path, text: str, offset: int) -> str:
    return f"{doc.relative_to(ROOT)}:{text.count(chr(10), 0, offset) + 1}"


def _spans(doc: Path) -> list[tuple[str, str]]:
    """(location, backticked text) of ``doc``, fenced blocks left out."""
    text = doc.read_text()
    prose = _FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)  # same offsets, no blocks
    return [(_where(doc, text, m.start()), m.group(1).strip()) for m in _TICKS.finditer(prose)]


def repo_path_problems() -> list[str]:
    problems = []
    for doc in DOCS:
        for where, span in _spans(doc):
            path, _, test = span.partition("::")
            if _PKG_RELATIVE.match(path):
                path = f"vggtctl/{path}"
            if not _PATH.match(path) or path.startswith("benchmarks/results/"):
                continue
            found = list(ROOT.glob(path.rstrip("/"))) if "*" in path else [ROOT / path]
            if not found or not all(p.exists() for p in found):
                problems.append(f"{where}: `{span}` does not exist")
            elif test and not re.search(rf"^def {re.escape(test)}\(", found[0].read_text(), re.M):
                problems.append(f"{where}: `{span}`: no test {test} in {path}")
    return problems


def _resolve(name: str) -> None:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as e:
            if e.name is None or not name.startswith(e.name):
                raise  # a module the named one imports is missing: not a stale name
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return


def dotted_names(doc: Path) -> dict[str, str]:
    """Every ``vggtctl.a.b`` name in ``doc``, with where it first appears."""
    text = doc.read_text()
    names: dict[str, str] = {}
    for m in _DOTTED.finditer(text):
        names.setdefault(m.group(0), _where(doc, text, m.start()))
    for m in _FROM_IMPORT.finditer(text):
        for imported in m.group(2).split(","):
            imported = imported.strip().split(" as ")[0]
            if imported:
                names.setdefault(f"{m.group(1)}.{imported}", _where(doc, text, m.start()))
    return names


def _command_tree() -> dict[str, tuple[set[str], dict, bool]]:
    """``{name: (options, subcommands, is_group)}`` of the CLI, with train-vln's and finetune's helpers."""
    import typer

    from vggtctl.cli.app import app
    from vggtctl.cli.finetune import merge_app
    from vggtctl.cli.train_vln import init_tiny_app, predict_app

    def node(cmd) -> tuple[set[str], dict, bool]:
        opts = {o for p in cmd.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)}
        subs = {name: node(sub) for name, sub in getattr(cmd, "commands", {}).items()}
        # train-vln is a group that runs itself (invoke_without_command) with its helpers as arguments
        is_group = hasattr(cmd, "commands") and not getattr(cmd, "invoke_without_command", False)
        return opts | {"--help", "-h"}, subs, is_group

    root = node(typer.main.get_command(app))
    helpers = {
        "train-vln": {"init-tiny": init_tiny_app, "predict": predict_app},
        "finetune": {"merge": merge_app},
    }
    for parent, apps in helpers.items():
        for name, helper_app in apps.items():
            root[1][parent][1][name] = node(typer.main.get_command(helper_app))
    return {"vggtctl": root}


def _shell_lines(text: str) -> list[tuple[int, str]]:
    """(offset, line) with ``\\`` continuations joined."""
    out, start, pending = [], 0, ""
    offset = 0
    for line in text.splitlines(keepends=True):
        if not pending:
            start = offset
        offset += len(line)
        pending += line.rstrip("\n")
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        out.append((start, pending))
        pending = ""
    return out


def command_lines() -> list[tuple[str, str]]:
    """(location, text from ``vggtctl`` on) of every command line shown in the docs and example scripts."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for block in _FENCE.finditer(text):
            shown: list[tuple[str, str, list[str]]] = []  # each command with the output lines under it
            for offset, line in _shell_lines(block.group(1)):
                cmd = re.sub(r"^\s*(?:\w*\$ )?(?:\S*python\S* -m )?", "", line)
                if cmd.startswith("vggtctl "):
                    shown.append((_where(doc, text, block.start(1) + offset), cmd, []))
                elif shown:
                    shown[-1][2].append(line)
            # a command shown failing may be wrong on purpose (a misspelt setting and its error)
            found += [
                (where, cmd) for where, cmd, out in shown if not any(o.startswith("Error:") for o in out)
            ]
        found += [(where, span) for where, span in _spans(doc) if span.startswith("vggtctl ")]
    for script in SCRIPTS:
        text = script.read_text()
        aliases = re.findall(r"^(\w+)=\S*vggtctl$", text, re.M)
        for offset, line in _shell_lines(text):
            for alias in aliases:
                line = re.sub(rf'"?\${alias}\b"?', "vggtctl", line)
            line = re.sub(r'(?:\S*python\S*|"\$\w+") -m vggtctl\b', "vggtctl", line)
            starts = [m.start() for m in re.finditer(r"\bvggtctl ", line)]
            ends = [*starts[1:], len(line)] if starts else []
            found += [(_where(script, text, offset), line[a:b]) for a, b in zip(starts, ends, strict=True)]
    return found


def _words(cmd: str) -> list[str]:
    cmd = re.split(r"\s#|\s\||;|&&|\s2?>", cmd)[0]
    try:
        return shlex.split(cmd)
    except ValueError:  # an unbalanced quote in a synopsis
        return cmd.split()


def command_problems(tree: dict[str, tuple[set[str], dict, bool]], where: str, cmd: str) -> list[str]:
    words = _words(cmd)[1:]
    while words and words[0] in _ROOT_OPTIONS:
        words.pop(0)
    path = ["vggtctl"]
    opts, subs, is_group = tree["vggtctl"]
    while words and words[0] in subs:
        path.append(words.pop(0))
        opts, subs, is_group = subs[path[-1]]
    if is_group:  # vggtctl, download, cache, colmap: the next word must be one of their commands
        if words and re.fullmatch(r"[a-z][a-z-]+", words[0]):
            return [f"{where}: `{cmd}`: {' '.join(path)} has no command {words[0]!r}"]
        return []
    problems = []
    settings = _SETTINGS.get(" ".join(path))
    for word in words:
        key = _SETTING.match(word)
        if settings and key and key.group(1) != "key" and not setting_exists(settings, key.group(1)):
            problems.append(f"{where}: `{cmd}`: {' '.join(path)} has no setting {key.group(1)}")
        for flag in re.findall(r"(?:^|[\[/|(])(--?[A-Za-z][\w-]*)", word):
            if flag not in opts:
                problems.append(f"{where}: `{cmd}`: {' '.join(path)} has no option {flag}")
    return problems


def setting_exists(settings: tuple[str, str, str], key: str) -> bool:
    """Whether dotted ``key`` names a field of the settings dataclass (any key below a dict field)."""
    cls = getattr(importlib.import_module(settings[0]), settings[1])
    parts = key.split(".")
    while parts:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if parts[0] not in fields:
            return False
        f = fields[parts.pop(0)]
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if isinstance(value, dict):
            return True
        if not dataclasses.is_dataclass(value):
            return not parts
        cls = type(value)
    return False


def _script_flags(path: Path) -> set[str]:
    flags = {"--help", "-h"}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            flags |= {
                a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")
            }
    return flags


def script_flag_problems() -> list[str]:
    problems = []
    for doc in DOCS + SCRIPTS:
        text = doc.read_text()
        for offset, line in _shell_lines(text):
            for m in _SCRIPT.finditer(line):
                script = ROOT / (m.group(1) if "/" in m.group(1) else f"benchmarks/{m.group(1)}")
                if not script.is_file():
                    continue  # a missing script is repo_path_problems' finding
                flags = _script_flags(script)
                for flag in re.findall(r"(?<![\w-])(--[A-Za-z][\w-]*)", m.group(2)):
                    if flag not in flags:
                        problems.append(f"{_where(doc, text, offset)}: {m.group(1)} has no option {flag}")
    return problems


def test_every_repository_path_the_docs_name_exists() -> None:
    assert not repo_path_problems(), "\n".join(repo_path_problems())


def test_every_vggtctl_name_the_docs_use_imports() -> None:
    names = {n: w for doc in DOCS for n, w in dotted_names(doc).items()}
    assert len(names) > 50  # the scan found the names (the docs name well over a hundred)
    problems = []
    for name, where in sorted(names.items()):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as e:
            problems.append(f"{where}: {name}: {type(e).__name__}: {e}")
    assert not problems, "\n".join(problems)


def test_every_command_shown_uses_real_subcommands_and_flags() -> None:
    tree = _command_tree()
    lines = command_lines()
    assert len(lines) > 100  # docs, README and example scripts show a few hundred
    problems = [p for where, cmd in lines for p in command_problems(tree, where, cmd)]
    assert not problems, "\n".join(problems)


def test_every_docs_page_is_listed_in_both_indexes() -> None:
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"README.md"}
    readme, index = (ROOT / "README.md").read_text(), (ROOT / "docs" / "README.md").read_text()
    assert sorted(p for p in pages if f"`docs/{p}`" not in readme) == []
    assert sorted(p for p in pages if f"`{p}`" not in index) == []


def test_every_setting_the_settings_docs_show_exists() -> None:
    problems, checked = [], 0
    for settings in _SETTINGS.values():
        doc = ROOT / settings[2]
        for where, span in _spans(doc):
            key = _SETTING.match(span)
            if key and key.group(1) != "key":
                checked += 1
                if not setting_exists(settings, key.group(1)):
                    problems.append(f"{where}: `{span}`: no setting {key.group(1)} in {settings[1]}")
    assert checked >= 5 and not problems, "\n".join(problems)


def test_every_train_vln_setting_is_documented() -> None:
    # train-vln --help sends users to docs/train-vln.md for its key=value settings
    from vggtctl.services.vln.config import VlnTrainConfig

    doc = (ROOT / "docs" / "train-vln.md").read_text()
    missing = [f.name for f in dataclasses.fields(VlnTrainConfig) if f"`{f.name}`" not in doc]
    assert missing == []


def test_every_script_flag_shown_exists() -> None:
    assert not script_flag_problems(), "\n".join(script_flag_problems())


@pytest.mark.parametrize(
    "cmd, stale",
    [
        ("vggtctl infer imgs --out o --max-memroy 7GB", "infer has no option --max-memroy"),
        ("vggtctl download eth3d [--verify/--no-verfy]", "download eth3d has no option --no-verfy"),
        ("vggtctl cache bulid --data d", "vggtctl cache has no command 'bulid'"),
        ("vggtctl train-vln predict --checkpoint c --smaple s", "train-vln predict has no option --smaple"),
        ("vggtctl finetune merge runs/x --output m", "finetune merge has no option --output"),
        ("vggtctl evalute --data d", "vggtctl has no command 'evalute'"),
        ("vggtctl train-vln --data d export_gather=64", "train-vln has no setting export_gather"),
        ("vggtctl finetune --data d run.val_evry=0", "finetune has no setting run.val_evry"),
        ("vggtctl finetune --data d lora.rank.x=1", "finetune has no setting lora.rank.x"),
    ],
)
def test_the_command_check_finds_stale_commands(cmd: str, stale: str) -> None:
    problems = command_problems(_command_tree(), "here", cmd)
    assert len(problems) == 1 and problems[0].endswith(stale), problems


def test_the_command_check_accepts_real_commands() -> None:
    tree = _command_tree()
    for cmd in (
        "vggtctl --quiet infer imgs --model tiny --out o --format npz,ply --dry-run",
        "vggtctl download eth3d [--verify/--no-verify] [--dry-run] [--json]",
        "vggtctl train-vln --data d --vggt tiny image_width=112 merger_hidden=64",
        "vggtctl train-vln init-tiny --out tiny-qwen --tie-embeddings",
        "vggtctl finetune merge runs/x --out merged/",
        "vggtctl train-vln --data d final_save=false export_gather_mb=64 nccl.NCCL_IB_HCA=mlx5",
        "vggtctl finetune --data d [key=value ...] data.image_size=56 launch.nccl.NCCL_SOCKET_IFNAME=eth0",
    ):
        assert command_problems(tree, "here", cmd) == [], cmd

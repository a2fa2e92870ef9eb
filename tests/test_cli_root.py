"""Root CLI: no torch on --help (fresh interpreter), --version, unknown commands, error mapping, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import typer
from typer.testing import CliRunner

from vggtctl import __version__
from vggtctl.cli.app import app
from vggtctl.cli.errors import mapped_errors
from vggtctl.errors import InputError, UsageError

runner = CliRunner()

_PROBE = """
import sys
from typer.testing import CliRunner
from vggtctl.cli.app import app
codes = [CliRunner().invoke(app, args).exit_code for args in ({args})]
print(json.dumps({{"codes": codes, "heavy": sorted(m for m in ("torch", "numpy", "PIL", "cv2") if m in sys.modules)}}))
"""


def _fresh(args: list[list[str]]) -> dict:
    code = "import json\n" + _PROBE.format(args=", ".join(repr(a) for a in args))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_and_help_do_not_import_torch() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, vggtctl.cli.app; print('torch' in sys.modules)"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.stdout.strip() == "False", proc.stderr
    res = _fresh(
        [["--help"], ["infer", "--help"], ["env", "--help"], ["download", "weights", "--help"], ["--version"]]
    )
    assert res["codes"] == [0, 0, 0, 0, 0]
    assert "torch" not in res["heavy"]


def test_version_and_unknown_command() -> None:
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"vggtctl {__version__}"
    r = runner.invoke(app, ["frobnicate"])
    assert r.exit_code == 2 and "No such command" in r.stderr


def test_help_has_examples() -> None:
    for cmd in (["infer"], ["env"], ["download", "weights"]):
        r = runner.invoke(app, [*cmd, "--help"])
        assert r.exit_code == 0 and "Examples:" in r.stdout and "vggtctl " + " ".join(cmd) in r.stdout


def _app_raising(exc: BaseException) -> typer.Typer:
    t = typer.Typer()

    @t.command()
    @mapped_errors
    def boom() -> None:
        raise exc

    return t


def test_error_mapping_and_exit_codes() -> None:
    r = runner.invoke(_app_raising(InputError("bad image x.png", "pass a JPEG")), [])
    assert r.exit_code == 1 and r.stderr == "Error: bad image x.png\nHint: pass a JPEG\n" and r.stdout == ""
    r = runner.invoke(_app_raising(UsageError("bad option --foo 3", "use --foo 1")), [])
    assert r.exit_code == 2 and r.stderr.startswith("Error: bad option --foo 3")
    r = runner.invoke(_app_raising(KeyboardInterrupt()), [])
    assert r.exit_code == 130 and "Error: interrupted" in r.stderr
    r = runner.invoke(_app_raising(RuntimeError("kaput")), [])
    assert r.exit_code == 1 and "Error: RuntimeError: kaput" in r.stderr and "--debug" in r.stderr


def test_real_command_error_goes_to_stderr_with_hint(tmp_path) -> None:
    r = runner.invoke(app, ["infer", str(tmp_path / "nope.jpg"), "--model", "tiny", "--json"])
    assert r.exit_code == 1 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert lines[0] == f"Error: input not found: {tmp_path / 'nope.jpg'}" and lines[1].startswith("Hint: ")

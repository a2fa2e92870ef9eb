"""vggtctl.runtime: device specs, the dtype rule (CPU flags -> bf16/fp32), rank/world size, versions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vggtctl.errors import UsageError
from vggtctl.runtime import (
    DeviceSpec,
    DistInfo,
    autocast,
    check_dtype_name,
    cpu_bf16_support,
    device_problem,
    dist_info,
    parse_device,
    resolve_device,
    resolve_dtype,
    versions,
)
from vggtctl.runtime.precision import CpuBf16, cpu_auto_dtype, cpu_flags, probe_cpu_bf16

CPUINFO = Path(__file__).parent / "data" / "cpuinfo"


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("auto", DeviceSpec("auto")),
        ("cpu", DeviceSpec("cpu")),
        ("cuda", DeviceSpec("cuda")),
        ("cuda:0", DeviceSpec("cuda", 0)),
        ("cuda:12", DeviceSpec("cuda", 12)),
        (" CUDA:1 ", DeviceSpec("cuda", 1)),
    ],
)
def test_parse_device(spec: str, parsed: DeviceSpec) -> None:
    assert parse_device(spec) == parsed and device_problem(spec) is None
    assert str(parsed) == spec.strip().lower()


@pytest.mark.parametrize("spec", ["tpu", "cuda:", "cuda:-1", "cuda:x", "cpu:0", "mps"])
def test_bad_device_specs_say_why(spec: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_device(spec)
    assert e.value.message == f"device {spec!r}: not a device (use auto, cpu, cuda, cuda:N)"
    assert "cuda:N" in (e.value.hint or "")


def test_device_parsing_does_not_import_torch() -> None:
    code = (
        "import sys; from vggtctl.runtime import parse_device, check_dtype_name, dist_info;"
        "parse_device('cuda:1'); check_dtype_name('bf16'); dist_info();"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_resolve_device_against_this_machine() -> None:
    assert resolve_device("cpu") == "cpu"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert resolve_device("auto") == ("cuda" if count else "cpu")
    if count == 0:
        with pytest.raises(UsageError, match="sees no CUDA GPU"):
            resolve_device("cuda:0")
    else:
        assert resolve_device(f"cuda:{count - 1}") == f"cuda:{count - 1}"
        with pytest.raises(UsageError, match=f"only {count} CUDA GPU"):
            resolve_device(f"cuda:{count}")


# ---------------------------------------------------------------- dtype


@pytest.mark.parametrize(
    ("fixture", "native", "flags", "auto"),
    [
        (
            "epyc_zen3_avx2.txt",
            False,
            (),
            "fp32",
        ),  # bf16 emulated: 3.4x slower than fp32 (docs/performance.md)
        ("epyc_zen4_avx512_bf16.txt", True, ("avx512_bf16",), "bf16"),
        ("xeon_sapphire_rapids_amx.txt", True, ("amx_bf16", "avx512_bf16"), "bf16"),
        ("graviton3_neoverse_v1.txt", True, ("bf16",), "bf16"),
        ("graviton2_neoverse_n1.txt", False, (), "fp32"),
    ],
)
def test_cpu_flags_decide_auto_dtype(fixture: str, native: bool, flags: tuple[str, ...], auto: str) -> None:
    text = (CPUINFO / fixture).read_text()
    support = cpu_bf16_support(text)
    assert support == CpuBf16(native, "cpuinfo", flags)
    assert cpu_auto_dtype(cpu_flags(text)) == auto
    choice = resolve_dtype("auto", "cpu", cpu=support)
    assert choice.short == auto and choice.requested == "auto"
    assert choice.reason == f"CPU bf16 {support.describe()}"
    assert ("native" in choice.reason) is native


def test_flags_are_read_from_flags_lines_only() -> None:
    text = "model name\t: avx512_bf16 marketing name\nflags\t\t: fpu sse avx2\n"
    assert cpu_flags(text) == frozenset({"fpu", "sse", "avx2"})
    assert cpu_bf16_support(text).native is False


def test_unreadable_flags_are_unknown_until_probed() -> None:
    for text in ("", "processor\t: 0\nvendor_id\t: Unknown\n"):
        unknown = cpu_bf16_support(text)
        assert unknown == CpuBf16(None, "unknown") and "unknown" in unknown.describe()
    probed = cpu_bf16_support("", probe=True)
    assert probed.source == "probe" and probed.probe is not None
    p = probed.probe
    assert (
        p["fp32_ms"] > 0
        and p["bf16_ms"] > 0
        and p["speedup"] == pytest.approx(p["fp32_ms"] / p["bf16_ms"], rel=0.01)
    )
    assert probed.native is (p["speedup"] > 1.0) and probe_cpu_bf16() == p  # measured once per process


def test_this_machine_matches_its_flags() -> None:
    flags = cpu_flags(Path("/proc/cpuinfo").read_text()) if Path("/proc/cpuinfo").is_file() else frozenset()
    choice = resolve_dtype("auto", "cpu")
    if flags:
        assert choice.short == ("bf16" if flags & {"amx_bf16", "avx512_bf16", "bf16"} else "fp32")


@pytest.mark.parametrize(
    ("requested", "name"),
    [
        ("fp32", "float32"),
        ("bf16", "bfloat16"),
        ("fp16", "float16"),
        ("float16", "float16"),
        ("BF16", "bfloat16"),
    ],
)
def test_explicit_dtype_is_kept_on_any_device(requested: str, name: str) -> None:
    for device in ("cpu", "cuda:3"):  # no CUDA query for an explicit choice
        choice = resolve_dtype(requested, device)
        assert choice.name == name and choice.reason == "requested"
    assert choice.torch == getattr(torch, name)


@pytest.mark.parametrize(
    ("requested", "device", "weights", "load", "cast"),
    [
        ("fp32", "cpu", "float32", None, None),
        ("bf16", "cpu", "bfloat16", "bf16", None),  # the loader's bf16 path; the aggregator autocasts itself
        ("fp16", "cpu", "float32", None, "float16"),
        ("bf16", "cuda:0", "float32", None, "bfloat16"),  # GPUs: float32 weights under autocast, as before
        ("fp16", "cuda", "float32", None, "float16"),
    ],
)
def test_weights_and_autocast_follow_the_device(
    requested: str, device: str, weights: str, load: str | None, cast: str | None
) -> None:
    choice = resolve_dtype(requested, device)
    assert (choice.weights, choice.load_dtype, choice.autocast_dtype) == (weights, load, cast)
    assert choice.to_dict()["weights"] == weights


def test_auto_on_a_native_bf16_cpu_loads_bf16_weights() -> None:
    amx = cpu_bf16_support((CPUINFO / "xeon_sapphire_rapids_amx.txt").read_text())
    avx2 = cpu_bf16_support((CPUINFO / "epyc_zen3_avx2.txt").read_text())
    assert resolve_dtype("auto", "cpu", cpu=amx).load_dtype == "bf16"
    assert resolve_dtype("auto", "cpu", cpu=avx2).load_dtype is None


def test_bad_dtype_names() -> None:
    assert check_dtype_name("int8") == "dtype 'int8' is not one of auto, fp32, bf16, fp16"
    assert check_dtype_name("auto") is None
    with pytest.raises(UsageError, match="dtype 'fp8'"):
        resolve_dtype("fp8", "cpu")


def test_autocast_lowers_matmuls_only_below_fp32() -> None:
    a = torch.randn(8, 8)
    for dtype in (None, "fp32", torch.float32, resolve_dtype("fp32")):
        with autocast("cpu", dtype):
            assert (a @ a).dtype == torch.float32
    for dtype in ("bf16", torch.bfloat16, resolve_dtype("bf16")):
        with autocast("cpu", dtype):
            assert (a @ a).dtype == torch.bfloat16


# ---------------------------------------------------------------- rank / world size


@pytest.mark.parametrize(
    ("env", "info"),
    [
        ({}, DistInfo(0, 0, 1)),
        ({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "8"}, DistInfo(0, 0, 8)),
        ({"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8"}, DistInfo(5, 1, 8)),
        ({"RANK": "4", "LOCAL_RANK": "0", "WORLD_SIZE": "8"}, DistInfo(4, 0, 8)),  # node 1's first GPU
        ({"LOCAL_RANK": "3"}, DistInfo(3, 3, 4)),  # LOCAL_RANK alone: one node
        ({"SLURM_PROCID": "2", "SLURM_LOCALID": "0", "SLURM_NTASKS": "4"}, DistInfo(2, 0, 4)),
        ({"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "7", "SLURM_NTASKS": "16"}, DistInfo(1, 0, 2)),
        ({"RANK": "", "LOCAL_RANK": ""}, DistInfo(0, 0, 1)),  # empty = unset
        ({"RANK": "x", "WORLD_SIZE": "two"}, DistInfo(0, 0, 1)),  # unreadable = unset
        ({"RANK": "3", "WORLD_SIZE": "2"}, DistInfo(3, 0, 4)),  # world size never below rank + 1
    ],
)
def test_rank_rule(env: dict[str, str], info: DistInfo) -> None:
    assert dist_info(env) == info
    assert info.is_rank_zero is (info.rank == 0)


def test_cli_output_and_run_directory_use_the_same_rank(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from vggtctl.cli.output import is_rank_zero
    from vggtctl.runs.rundir import RunDir

    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    for env, writer in (
        ({}, True),
        ({"LOCAL_RANK": "1"}, False),
        ({"SLURM_PROCID": "3"}, False),
        ({"RANK": "0"}, True),
    ):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert is_rank_zero() is writer and RunDir(tmp_path / "r").is_writer is writer, env
        for k in env:
            monkeypatch.delenv(k)


def test_versions_come_from_metadata() -> None:
    v = versions()
    assert v["torch"] == torch.__version__ and v["python"].count(".") == 2 and v["vggtctl"]
    assert set(versions(("no-such-distribution",))) == {"vggtctl", "python", "platform"}

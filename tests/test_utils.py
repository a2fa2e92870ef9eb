"""vggtctl.utils: size formatting (SI vs binary, named), SHA-256 helpers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from vggtctl.utils.fmt import bytes_binary, bytes_si
from vggtctl.utils.hashing import sha256_file

ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 example "abc"


@pytest.mark.parametrize(
    ("n", "si", "binary"),
    [
        (0, "0 B", "0 B"),
        (999, "999 B", "999 B"),
        (1000, "1.0 KB", "1000 B"),
        (1024, "1.0 KB", "1.0 KiB"),
        (376_700_000, "376.7 MB", "359.2 MiB"),
        (2_300_000_000, "2.3 GB", "2.1 GiB"),
        (3 * 2**30, "3.2 GB", "3.0 GiB"),
        (5 * 10**15, "5000.0 TB", "4547.5 TiB"),
        (None, "?", "?"),
    ],
)
def test_byte_formats(n: int | None, si: str, binary: str) -> None:
    assert bytes_si(n) == si and bytes_binary(n) == binary


def test_unknown_size_text() -> None:
    assert bytes_si(None, "size unknown") == "size unknown"


def test_sha256_file_streams_in_chunks(tmp_path: Path) -> None:
    f = tmp_path / "abc"
    f.write_bytes(b"abc")
    assert sha256_file(f) == sha256_file(f, chunk=1) == ABC
    big = tmp_path / "big"
    data = os.urandom(3 * 1024 + 7)
    big.write_bytes(data)
    assert sha256_file(big, chunk=1024) == hashlib.sha256(data).hexdigest()

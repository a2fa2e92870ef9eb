"""Safe 7z extraction: exact contents, merging, and nothing written outside the target for bad archives."""

from __future__ import annotations

import os
from pathlib import Path

import py7zr
import pytest

from vggtctl.services.extract import ArchiveError, check_member_name, safe_extract


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with py7zr.SevenZipFile(path, "w") as z:
        for name, data in members.items():
            z._writestr(data, name)  # the private writer skips py7zr's own name checks: we test ours
    return path


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


GOOD = {
    "scene/images/dslr_images_undistorted/DSC_0000.JPG": b"\xff\xd8jpeg" * 100,
    "scene/dslr_calibration_undistorted/cameras.txt": b"0 PINHOLE 10 10 5 5 5 5\n",
    "scene/empty.txt": b"",
}


def test_extracts_exact_contents_and_merges_kinds(tmp_path: Path) -> None:
    target = tmp_path / "data"
    seen: list[int] = []
    res = safe_extract(_archive(tmp_path / "a.7z", GOOD), target, on_bytes=seen.append)
    assert _tree(target) == GOOD
    assert res.files == {k: len(v) for k, v in GOOD.items()} and res.top_level == ["scene"]
    assert res.bytes == sum(len(v) for v in GOOD.values())
    # a second kind of the same scene shares scene/images/: both end up side by side
    other = {"scene/images/dslr_images/DSC_0000.JPG": b"orig", "scene/dslr_calibration_jpg/cameras.txt": b"x"}
    safe_extract(_archive(tmp_path / "b.7z", other), target)
    assert _tree(target) == {**GOOD, **other}
    # re-extracting replaces files in place; nothing else is left behind
    safe_extract(_archive(tmp_path / "c.7z", {"scene/empty.txt": b"now full"}), target)
    assert (target / "scene" / "empty.txt").read_bytes() == b"now full"
    assert sorted(p.name for p in target.iterdir()) == ["scene"]


@pytest.mark.parametrize(
    ("name", "why"),
    [("../evil", "escapes the target"), ("scene/../../evil", "escapes the target"),
     ("/tmp/vggtctl_abs_evil", "absolute path"), ("C:/evil", "absolute path")],
)  # fmt: skip
def test_unsafe_member_names_are_refused(tmp_path: Path, name: str, why: str) -> None:
    target = tmp_path / "data" / "inner"
    archive = _archive(tmp_path / "bad.7z", {"scene/ok.txt": b"ok", name: b"evil"})
    with pytest.raises(ArchiveError, match=why):
        safe_extract(archive, target)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "data" / "evil").exists()
    assert not Path("/tmp/vggtctl_abs_evil").exists()
    assert not target.exists()


def test_link_pointing_outside_is_refused(tmp_path: Path) -> None:
    src = (
        tmp_path / "a" / "b" / "scene"
    )  # the link resolves to tmp_path/outside from here and from data/.extract*/scene
    src.mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (src / "f.txt").write_text("fine")
    os.symlink("../../../outside", src / "link")  # resolves outside the extraction target
    archive = tmp_path / "link.7z"
    with py7zr.SevenZipFile(archive, "w") as z:
        z.write(src / "f.txt", arcname="scene/f.txt")
        z.write(src / "link", arcname="scene/link")
    target = tmp_path / "data"
    with pytest.raises(ArchiveError, match="points outside the target"):
        safe_extract(archive, target)
    assert list(target.iterdir()) == []  # no scene, no temporary folder


def test_member_below_a_symlink_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.symlink("/tmp", src / "link")
    archive = tmp_path / "below.7z"
    with py7zr.SevenZipFile(archive, "w") as z:
        z.write(src / "link", arcname="scene/link")
        z._writestr(b"written through the link", "scene/link/vggtctl_evil")
    with pytest.raises(ArchiveError, match="lies below the symlink member 'scene/link'"):
        safe_extract(archive, tmp_path / "data")
    assert not Path("/tmp/vggtctl_evil").exists() and not (tmp_path / "data").exists()


def test_member_names_are_normalised() -> None:
    assert check_member_name("a//b/./c") == "a/b/c"
    assert check_member_name("scene\\images\\x.JPG") == "scene/images/x.JPG"
    with pytest.raises(ArchiveError, match="empty path"):
        check_member_name("./")


def test_corrupted_archive_changes_nothing(tmp_path: Path) -> None:
    payload = {f"scene/f{i}.bin": os.urandom(1000) * 50 for i in range(3)}
    archive = _archive(tmp_path / "a.7z", payload)
    raw = bytearray(archive.read_bytes())
    for i in range(200, 260):  # inside the packed stream, after the 32-byte signature header
        raw[i] ^= 0x5A
    archive.write_bytes(bytes(raw))
    target = tmp_path / "data"
    target.mkdir()
    (target / "keep.txt").write_text("existing data")
    with pytest.raises(ArchiveError, match="corrupted|not a readable 7z"):
        safe_extract(archive, target)
    assert _tree(target) == {"keep.txt": b"existing data"}
    truncated = tmp_path / "t.7z"
    truncated.write_bytes(_archive(tmp_path / "b.7z", payload).read_bytes()[:-100])
    with pytest.raises(ArchiveError):
        safe_extract(truncated, target)
    assert _tree(target) == {"keep.txt": b"existing data"}

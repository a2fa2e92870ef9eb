from __future__ import annotations

import pytest

from vggtctl.utils.atomic import atomic_open, atomic_write_json


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "status.json"
    atomic_write_json(target, {"step": 1})
    with pytest.raises(RuntimeError), atomic_open(target, "w") as f:
        f.write('{"step": 2')
        raise RuntimeError("crash mid-write")
    assert target.read_text().strip().startswith("{") and '"step": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]

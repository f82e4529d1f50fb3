import os

import pytest

from bssl.utils import atomic_path, write_json


def test_atomic_write_honours_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "out" / "report.json", {"a": 1})
    finally:
        os.umask(old)
    # reports and models are copied to boards and read by other users: not mode 0600
    assert (tmp_path / "out" / "report.json").stat().st_mode & 0o777 == 0o644


def test_failed_atomic_write_leaves_nothing(tmp_path):
    target = tmp_path / "model.bssl"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bssl"]

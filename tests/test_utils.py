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


def test_replace_section_keeps_the_hand_written_page(tmp_path):
    from bssl.errors import UserError
    from bssl.utils import replace_section

    doc = tmp_path / "page.md"
    doc.write_text("# Title\nintro\n<!-- t:begin -->\nold table\n<!-- t:end -->\nnotes\n")
    replace_section(doc, "<!-- t:begin -->", "<!-- t:end -->", "new table\n")
    assert doc.read_text() == "# Title\nintro\n<!-- t:begin -->\nnew table\n<!-- t:end -->\nnotes\n"
    with pytest.raises(UserError, match="no <!-- u:begin -->"):
        replace_section(doc, "<!-- u:begin -->", "<!-- u:end -->", "x\n")
    assert "new table" in doc.read_text()

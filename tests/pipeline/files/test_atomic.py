"""One atomic writer for PNGs and checkpoints: temporary names fit the file system in bytes, a failure leaves the
old file whole and no temporary behind, and the mode is the one asked for."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from multidiffusion.pipeline.files.atomic import write_atomically


def test_a_name_of_two_byte_characters_at_the_limit_is_written(tmp_path):
    target = tmp_path / ("é" * 120 + ".ckpt")  # 245 bytes: fits, though its temporary name must be cut
    assert len(os.fsencode(target.name)) == 245
    write_atomically(target, b"data", sync=True)
    assert target.read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "x.ckpt"
    write_atomically(target, b"old")

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.ckpt"]


def test_the_mode_is_the_one_asked_for(tmp_path):
    write_atomically(tmp_path / "a", b"", mode=0o600)
    write_atomically(tmp_path / "b", lambda f: f.write(b"via a function"), mode=0o644)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o644
    assert (tmp_path / "b").read_bytes() == b"via a function"

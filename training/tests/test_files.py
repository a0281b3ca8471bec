"""The trainer's one atomic write (crad.files): the reader sees the old file or the whole new one,
the new file is on disk (file and folder fsynced) before it counts as written, nothing is left
behind on failure, and the file gets ordinary permissions (the daemon's user must read a model)."""

import os
import stat

import numpy as np
import pytest
import torch

from crad import files
from crad.model import atomic_torch_save


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_replaces_the_file_whole_with_umask_permissions(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with files.atomic_open(target) as file:
        file.write(b"new ")
        assert target.read_bytes() == b"old"  # a reader meanwhile sees the old file
        assert os.path.dirname(file.name) == str(tmp_path)  # same folder: the rename cannot cross file systems
        file.write(b"content")
    assert target.read_bytes() == b"new content"
    assert leftovers(tmp_path) == []
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "best.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with files.atomic_open(target) as file:
            file.write(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_file_then_folder_are_fsynced_around_the_rename(tmp_path, monkeypatch):
    target = tmp_path / "calibration.json"
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append((stat.S_ISDIR(os.fstat(fd).st_mode), target.exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    files.atomic_write_bytes(target, b"{}\n")
    # the data before the rename (the target does not exist yet), the folder's entry after it
    assert synced == [(False, False), (True, True)]


def test_missing_folder_is_an_error_unless_asked_to_create_it(tmp_path):
    with pytest.raises(FileNotFoundError):
        files.atomic_write_bytes(tmp_path / "missing" / "a.json", b"{}")
    files.atomic_write_bytes(tmp_path / "made" / "a.json", b"{}", parents=True)
    assert (tmp_path / "made" / "a.json").read_bytes() == b"{}"


def test_torch_checkpoints_go_through_it_and_load_back(tmp_path):
    payload = {"format": "x", "weights": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    atomic_torch_save(payload, str(tmp_path / "last.pt"))
    loaded = torch.load(tmp_path / "last.pt")
    assert loaded["format"] == "x" and np.array_equal(loaded["weights"].numpy(), payload["weights"].numpy())
    assert leftovers(tmp_path) == []

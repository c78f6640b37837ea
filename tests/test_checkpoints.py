"""Checkpoint files: written whole (temp file + rename), and a resume never picks one whose
optimizer state is partial or that was saved mid-epoch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from memgen.training.checkpoints import (
    AtomicCheckpointIO,
    checkpoint_step,
    newest_complete,
    whole_checkpoint,
)


def _checkpoint(step: int, n_params: int = 3, with_state: int = 3, mid_epoch: bool = False):
    """A Lightning-shaped checkpoint: Adam state for ``with_state`` of ``n_params`` params."""
    state = {i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(2),
                 "exp_avg_sq": torch.zeros(2)} for i in range(with_state)}
    batches = {"ready": 2, "completed": 1 if mid_epoch else 2, "started": 2, "processed": 2}
    return {
        "global_step": step, "epoch": step // 2, "state_dict": {"w": torch.zeros(2)},
        "optimizer_states": [{"state": state,
                              "param_groups": [{"params": list(range(n_params)), "lr": 1e-3}]}],
        "loops": {"fit_loop": {
            "epoch_progress": {"current": {"ready": 1, "completed": 0, "started": 1,
                                           "processed": 1}},
            "epoch_loop.batch_progress": {"current": batches}}},
    }


def test_partial_optimizer_state_is_never_the_resume_point(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint(_checkpoint(4), tmp_path / "last.ckpt")
    io.save_checkpoint(_checkpoint(6, with_state=2), tmp_path / "on_exception.ckpt")
    io.save_checkpoint(_checkpoint(5, mid_epoch=True), tmp_path / "mid.ckpt")
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "last.ckpt").read_bytes()[:300])
    assert whole_checkpoint(tmp_path / "on_exception.ckpt") is None
    assert whole_checkpoint(tmp_path / "mid.ckpt") is not None
    assert checkpoint_step(tmp_path / "mid.ckpt") is None
    assert checkpoint_step(tmp_path / "cut.ckpt") is None
    assert newest_complete(sorted(tmp_path.glob("*.ckpt"))) == tmp_path / "last.ckpt"


def test_a_fresh_optimizer_without_state_is_whole(tmp_path):
    AtomicCheckpointIO().save_checkpoint(_checkpoint(0, with_state=0), tmp_path / "a.ckpt")
    assert checkpoint_step(tmp_path / "a.ckpt") == 0


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint(_checkpoint(2), target)
    before = target.read_bytes()

    def dies(obj, handle):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint(_checkpoint(4), target)
    assert target.read_bytes() == before
    assert [p.name for p in Path(tmp_path).iterdir()] == ["last.ckpt"]

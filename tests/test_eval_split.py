"""An evaluation that would measure the training images says so (ganzip.data.eval_split)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ganzip.data.eval_split import training_split_warning


def _images(folder, n=2, size=16):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((size, size, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")


def test_a_flat_folder_is_its_own_training_split(tmp_path):
    _images(tmp_path / "flat")
    line = training_split_warning(tmp_path / "flat")
    assert "no test or val split" in line and "training images" in line and "\n" not in line


def test_a_and_b_folders_without_splits_are_training_images(tmp_path):
    _images(tmp_path / "ab" / "A")
    _images(tmp_path / "ab" / "B")
    assert "training images" in training_split_warning(tmp_path / "ab")


def test_unpaired_data_with_only_train_folders_is_flagged(tmp_path):
    for side in "AB":
        _images(tmp_path / "h2z" / f"train{side}")
    assert "train split" in training_split_warning(tmp_path / "h2z")


def test_a_test_split_is_not_flagged_unless_train_is_asked_for(tmp_path):
    for split in ("train", "test"):
        for side in "AB":
            _images(tmp_path / "h2z" / f"{split}{side}")
    assert training_split_warning(tmp_path / "h2z") is None
    assert training_split_warning(tmp_path / "h2z", "test") is None
    assert "train split" in training_split_warning(tmp_path / "h2z", "train")


@pytest.mark.parametrize("split, flagged", [(None, False), ("test", False), ("train", True)])
def test_builtin_tasks_render_their_test_split_apart(split, flagged):
    assert (training_split_warning("builtin:edges2shapes", split) is not None) is flagged

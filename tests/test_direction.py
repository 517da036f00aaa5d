"""`--direction BtoA` on compress and train: the B side of a standard dataset root is the model's input.

The data layer's swap is specified in tests/test_data.py; these tests check
that the commands hand the flag to it, by reading back the input images the
training data actually yields (white B halves against black A halves).
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
from PIL import Image

import ganzip.data as gdata
from ganzip import engine, teacher


def _plumbed(fn):
    if "direction" not in inspect.signature(fn).parameters:
        pytest.skip(f"{fn.__module__}.{fn.__name__} takes no direction= yet (plumbed at merge)")


@pytest.fixture
def pairs(tmp_path):
    """pix2pix A|B images: black A halves, white B halves."""
    folder = tmp_path / "pairs" / "train"
    folder.mkdir(parents=True)
    for i in range(4):
        ab = np.zeros((32, 64, 3), np.uint8)
        ab[:, 32:] = 255
        Image.fromarray(ab).save(folder / f"{i}.png")
    return tmp_path / "pairs"


@pytest.fixture
def training_inputs(monkeypatch, tmp_path):
    """The mean of the first input image of every training split the run opens."""
    monkeypatch.setenv("GANZIP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GANZIP_OFFLINE", "1")
    seen: list[float] = []
    real = gdata.open_dataset

    def spy(source, *args, **kwargs):
        ds = real(source, *args, **kwargs)
        if kwargs.get("split", "train") == "train":
            seen.append(float(ds[0]["A"].mean()))
        return ds

    monkeypatch.setattr(gdata, "open_dataset", spy)
    return seen


@pytest.mark.parametrize("direction, value", [("AtoB", -1.0), ("BtoA", 1.0)])
def test_compress_direction_picks_the_input_half(cli, teacher_file, pairs, training_inputs, tmp_path, direction, value):
    _plumbed(engine.compress)
    res = cli("compress", teacher_file, "--arch", "resnet_6blocks", "--arch-opt", "ngf=4", "--data", pairs,
              "--direction", direction, "--recipe", "kd-pixel", "--size", "32", "--steps", "1", "--quiet",
              "--out", tmp_path / "out")
    assert res.exit_code == 0, res.stderr
    assert training_inputs and training_inputs[0] == pytest.approx(value)


def test_train_direction_BtoA_feeds_the_B_half(cli, pairs, training_inputs, tmp_path):
    _plumbed(teacher.train_teacher)
    res = cli("train", "--arch", "resnet_6blocks", "--arch-opt", "ngf=4", "--data", pairs, "--direction", "BtoA",
              "--size", "32", "--steps", "1", "--quiet", "--out", tmp_path / "t")
    assert res.exit_code == 0, res.stderr
    assert training_inputs and training_inputs[0] == pytest.approx(1.0)

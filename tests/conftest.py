"""Shared fixtures. Every model here has random weights made inside the test."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

os.environ.setdefault("GANZIP_OFFLINE", "1")  # tests never touch the network
# One thread: on a loaded 2-core machine, two threads per test process thrash (InstanceNorm 60 ms vs 0.07 ms).
torch.set_num_threads(1)


def _before_step_one_removed(stderr: str) -> list[str]:
    """stderr without the plan block (its title and indented lines) and the ``warning:`` lines."""
    kept, in_block = [], False
    for line in stderr.strip().splitlines():
        if line.startswith("ganzip compress: recipe ") and line.endswith("the plan before step 1"):
            in_block = True
            continue
        if in_block and line.startswith("  "):
            continue
        in_block = False
        if not line.startswith("warning: "):
            kept.append(line)
    return kept


class CliResult:
    def __init__(self, result):
        self.exit_code = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.exception = result.exception

    def assert_user_error(self, *fragments: str) -> str:
        """Exit code 2, exactly one error line on stderr, no traceback; returns that line.

        What a run printed before it failed (compress's plan block and its
        ``warning:`` lines, said before step 1) is not part of the error.
        """
        assert self.exit_code == 2, (self.exit_code, self.stdout, self.stderr, self.exception)
        lines = [ln for ln in _before_step_one_removed(self.stderr) if ln.strip()]
        assert len(lines) == 1, self.stderr
        assert "Traceback" not in self.stderr + self.stdout
        for frag in fragments:
            assert frag.lower() in lines[0].lower(), (frag, lines[0])
        return lines[0]


@pytest.fixture
def cli():
    """Run `ganzip ARGS...` in-process, the way the console script does (no --debug)."""
    from ganzip.cli import main

    def invoke(*args: str, input: str | None = None) -> CliResult:
        runner = CliRunner()
        res = runner.invoke(main, [str(a) for a in args], obj={"debug": False}, input=input, catch_exceptions=True)
        return CliResult(res)

    return invoke


@pytest.fixture
def tiny_resnet():
    """A random-weight CycleGAN ResNet generator small enough for fast tests."""
    from ganzip import models

    torch.manual_seed(0)
    return models.create("resnet_6blocks", ngf=8).eval()


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A random-weight resnet_6blocks (ngf 4) state dict saved as safetensors."""
    from safetensors.torch import save_file

    from ganzip import models

    torch.manual_seed(0)  # random weights: no pretrained generator exists here
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_file(models.create("resnet_6blocks", ngf=4).state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A CycleGAN-layout folder (trainA/trainB) of six random 32x32 PNGs each."""
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for domain in ("trainA", "trainB"):
        (root / domain).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / domain / f"{i}.png")
    return root

"""Every command in README.md's code blocks runs offline, at tiny sizes, or says first what it needs.

The README's fenced blocks are parsed as they are written (backslash
continuations joined, `&&` chains split, `# comments` dropped). Then:

* a `ganzip ...` line runs in-process in a scratch folder that holds
  random-weight stand-ins for the files it names (`latest_net_G.pth` is a
  random `resnet_9blocks`, `datasets/horse2zebra` four 32-px images per
  folder; no pretrained generator exists here). Only sizes and step counts are
  changed, through documented flags (`SMALL` below). It must exit 0.
* a line commented `# needs ASSET (else FLAGS)` must stop with exit 2 and one
  line naming the missing pretrained file (no weights are installed, and the
  run is offline); then the same line with FLAGS applied must run.
* the Python block runs with ``ganzip.compress`` given the same small sizes.
* installing (`python3 -m venv`, `pip install`), the demo (CI's own job runs
  it: about a CPU-minute even at 2 steps) and the test suite itself are
  skipped, each with its reason.

Break a README command (a flag that does not exist, a file name that is
wrong) and its case fails.
"""
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"

# Documented flags that shrink a command (appended unless the command sets them; `--size` is replaced).
SMALL = {
    "compress": ["--size", "32", "--steps", "2", "--eval-every", "0", "--checkpoint-every", "0", "--quiet"],
    "eval": ["--size", "32", "--max-images", "2", "--no-latency", "--quiet"],
    "export": ["--size", "32", "--no-latency"],
    "profile": ["--repeats", "1", "--size", "64"],
}
FULL_SIZE = ("unet_256",)  # eight downsamplings: 256 px or nothing
ASSET_FILES = {"VGG-16": "vgg16-397923af.pth", "Inception": "pt_inception-2015-12-05-6726825d.pth",
               "AlexNet": "alexnet"}
SKIPS = {
    "python3 -m venv": "creates a virtual environment (CI's install step does this)",
    "pip install": "installs packages (CI's install step does this)",
    "ganzip demo": "CI's main job runs the demo; about a CPU-minute even at --steps 2",
    "pytest": "runs the test suite this test belongs to",
}
# README commands that are broken today, each with its defect; strict, so a fix shows up as XPASS.
KNOWN_BROKEN: dict[str, str] = {}
NEEDS = re.compile(r"needs (?P<asset>[\w-]+)(?: \(else (?P<fix>[^)]*)\))?")


def _blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)


def _commands(body: str) -> list[tuple[str, str]]:
    """(command, comment) per logical line; `a && b` gives two commands with the same comment."""
    joined = re.sub(r"\\\n\s*", " ", body)
    out = []
    for line in joined.splitlines():
        if not line.strip():
            continue
        code, _, comment = line.partition(" #")
        for part in code.split("&&"):
            out.append((part.strip(), comment.strip()))
    return out


def _shell_cases():
    cases = []
    for lang, body in _blocks(README.read_text(encoding="utf-8")):
        if lang == "python":
            continue
        for command, comment in _commands(body):
            broken = [reason for start, reason in KNOWN_BROKEN.items() if command.startswith(start)]
            marks = [pytest.mark.xfail(strict=True, reason=broken[0])] if broken else []
            cases.append(pytest.param(command, comment, id=command[:70], marks=marks))
    return cases


def _apply(args: list[str], flags: list[str]) -> list[str]:
    """`flags` (`--flag value` or bare `--flag`) replacing the command's own, else appended."""
    args, i = list(args), 0
    while i < len(flags):
        flag = flags[i]
        has_value = i + 1 < len(flags) and not flags[i + 1].startswith("--")
        if flag in args and has_value:
            args[args.index(flag) + 1] = flags[i + 1]
        elif flag not in args:
            args += [flag] + ([flags[i + 1]] if has_value else [])
        i += 2 if has_value else 1
    return args


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with stand-ins for every file the README names (random weights, made here)."""
    from safetensors.torch import save_file

    from ganzip import models

    root = tmp_path_factory.mktemp("readme")
    torch.manual_seed(0)
    torch.save(models.create("resnet_9blocks").state_dict(), root / "latest_net_G.pth")
    torch.save(models.create("unet_256", norm="batch").state_dict(), root / "net.pth")
    (root / "mypkg").mkdir()
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "nets.py").write_text(
        "import torch.nn as nn\n\n\nclass MyGenerator(nn.Sequential):\n"
        "    def __init__(self, width=8):\n"
        "        super().__init__(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 3, 3, padding=1),"
        " nn.Tanh())\n")
    sys.path.insert(0, str(root))
    from mypkg.nets import MyGenerator

    save_file(MyGenerator(width=32).state_dict(), str(root / "g.safetensors"))
    small = models.create("resnet_6blocks", ngf=4).eval()
    torch.jit.script(small).save(str(root / "scripted.pt"))
    torch.save(small, root / "whole_model.pth")
    rng = np.random.default_rng(0)
    for folder in ("trainA", "trainB", "testA", "testB"):
        d = root / "datasets" / "horse2zebra" / folder
        d.mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    yield root
    sys.path.remove(str(root))
    sys.modules.pop("mypkg.nets", None)
    sys.modules.pop("mypkg", None)


@pytest.fixture
def offline(workdir, monkeypatch, tmp_path):
    """Run in the stand-in folder, offline, with no pretrained file installed anywhere."""
    for var in ("GANZIP_HOME", "TORCH_HOME", "XDG_CACHE_HOME", "HF_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.setenv("GANZIP_OFFLINE", "1")
    monkeypatch.chdir(workdir)
    return workdir


def _recipe_missing(args: list[str]) -> str | None:
    from ganzip.recipes import list_recipes

    if "--recipe" in args and args[args.index("--recipe") + 1] not in list_recipes():
        return args[args.index("--recipe") + 1]
    return None


@pytest.mark.parametrize("command, comment", _shell_cases())
def test_readme_command(command, comment, cli, offline):
    for start, reason in SKIPS.items():
        if start in command:
            pytest.skip(f"{command!r}: {reason}")
    args = shlex.split(command)
    assert args[0] == "ganzip", f"README command {command!r} is neither ganzip nor a known skip"
    small = SMALL.get(args[1], [])
    if any(name in args for name in FULL_SIZE):
        small = [a for a in small if a not in ("--size", "64")]
    args = _apply(args[1:], small)
    made_earlier = [a for a in args if a.startswith("runs/") and a.endswith(".safetensors") and not Path(a).exists()]
    if made_earlier:
        pytest.skip(f"{made_earlier[0]} comes from an earlier README command that was skipped")
    needs = NEEDS.search(comment)
    if needs:
        missing = ASSET_FILES[needs["asset"]]
        res = cli(*args)
        res.assert_user_error(missing.split("-")[0])
        if not needs["fix"]:
            return
        args = _apply(args, shlex.split(needs["fix"]))
    if _recipe_missing(args):
        pytest.skip(f"recipe {_recipe_missing(args)!r} is not on this branch")
    res = cli(*args)
    assert res.exit_code == 0, f"{command!r} exited {res.exit_code}: {res.stderr or res.stdout}"


def test_readme_python_block(offline, monkeypatch):
    import ganzip
    from ganzip.recipes import list_recipes

    (code,) = [body for lang, body in _blocks(README.read_text(encoding="utf-8")) if lang == "python"]
    recipe = re.search(r'recipe="([\w-]+)"', code)
    if recipe and recipe[1] not in list_recipes():
        pytest.skip(f"recipe {recipe[1]!r} is not on this branch")
    real = ganzip.compress
    monkeypatch.setattr(ganzip, "compress", lambda *a, **k: real(*a, **{"size": 32, "steps": 2, "quiet": True,
                                                                         "checkpoint_every": 0, "eval_every": 0, **k}))
    exec(compile(code, str(README), "exec"), {})

"""Security: no pickle without --trust-pickle, no code execution from data, no network, safetensors outputs.

Two kinds of test: AST scans of the package source (what calls exist and
where), and behavioural tests that feed hostile files through the CLI. The
teacher is a random-weight ngf-4 ResNet saved inside the test (no pretrained
weights exist here); images are 32 px random PNGs.
"""
from __future__ import annotations

import ast
import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ganzip

PKG = Path(ganzip.__file__).resolve().parent
FAST = ["--arch", "resnet_6blocks", "--arch-opt", "ngf=4", "--size", "32", "--set", "crd.patch_size=8",
        "--set", "discriminator.ndf=4", "--set", "eval.max_images=2", "--device", "cpu", "--quiet"]
ALLOWED_OUTPUT_SUFFIXES = {".safetensors", ".json", ".md", ".html", ".png", ".csv"}


# ---------------------------------------------------------------- fixtures


def record(request, line: str) -> None:
    """With GANZIP_RECORD_ERRORS=FILE, append the user's line to FILE (regenerates docs/reliability.md)."""
    path = os.environ.get("GANZIP_RECORD_ERRORS")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"test": request.node.name, "line": line}) + "\n")


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Every socket connection and DNS lookup is refused and recorded; asset caches point at empty folders."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args and isinstance(args[0], socket.socket) else args)
        raise OSError(errno.ENETUNREACH, "network access attempted during a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for var in ("XDG_CACHE_HOME", "GANZIP_HOME", "TORCH_HOME", "HF_HOME", "HF_HUB_CACHE"):
        monkeypatch.setenv(var, str(tmp_path / "empty-cache" / var.lower()))
    return attempts


# ---------------------------------------------------------------- AST scans of the package


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        yield path.relative_to(PKG.parent).as_posix(), ast.parse(path.read_text(), filename=str(path))


def _dotted(node) -> str | None:
    """`torch.serialization.load` for the func of a call, or None when it is not a plain dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _calls(tree):
    """(call node, dotted name, enclosing function name) for every call, with `from x import y` resolved."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    aliases[a.asname] = a.name

    out = []

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.Call):
                name = _dotted(child.func)
                if name is not None:
                    head, _, rest = name.partition(".")
                    name = aliases.get(head, head) + (f".{rest}" if rest else "")
                out.append((child, name, func))
            visit(child, inner)

    visit(tree, "<module>")
    return out


def _function_params(tree, func_name) -> set[str]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == func_name:
            a = node.args
            return {x.arg for x in a.args + a.kwonlyargs + a.posonlyargs}
    return set()


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


# torch.load calls that may unpickle objects: each only when its function's `trust_pickle` is true.
TRUST_PICKLE_LOADS = {("ganzip/loading.py", "read_checkpoint"), ("ganzip/assets.py", "load_state_dict")}


def test_every_torch_load_is_weights_only_or_a_trust_pickle_path():
    offenders, trusted = [], set()
    for rel, tree in _modules():
        for call, name, func in _calls(tree):
            if name not in ("torch.load", "torch.serialization.load"):
                continue
            wo = _kw(call, "weights_only")
            if isinstance(wo, ast.Constant) and wo.value is True:
                continue
            where = (rel, func)
            uses_flag = wo is not None and "trust_pickle" in ast.unparse(wo) or (
                isinstance(wo, ast.Constant) and wo.value is False)
            if where in TRUST_PICKLE_LOADS and uses_flag and "trust_pickle" in _function_params(tree, func):
                trusted.add(where)
                continue
            offenders.append(f"{rel}:{call.lineno} in {func}(): {ast.unparse(call)}")
    assert not offenders, "torch.load without weights_only=True:\n" + "\n".join(offenders)
    assert ("ganzip/loading.py", "read_checkpoint") in trusted  # the one --trust-pickle path for models


def test_loading_unpickles_only_after_the_trust_pickle_check():
    tree = ast.parse((PKG / "loading.py").read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "read_checkpoint")
    guard = next(n for n in ast.walk(fn) if isinstance(n, ast.If) and ast.unparse(n.test) == "not trust_pickle")
    assert any(isinstance(s, ast.Raise) for s in guard.body)  # refuses before the unpickling call
    unsafe = [c for c, name, _ in _calls(fn) if name == "torch.load"
              and isinstance(_kw(c, "weights_only"), ast.Constant) and _kw(c, "weights_only").value is False]
    assert len(unsafe) == 1 and unsafe[0].lineno > guard.lineno


FORBIDDEN_CALLS = {
    "eval": "eval()", "exec": "exec()", "pickle.load": "pickle", "pickle.loads": "pickle",
    "pickle.Unpickler": "pickle", "marshal.loads": "marshal", "marshal.load": "marshal", "shelve.open": "shelve",
    "yaml.load": "yaml.load", "yaml.unsafe_load": "yaml.unsafe_load", "os.system": "os.system",
    "os.popen": "os.popen", "os.execv": "exec*", "os.execvp": "exec*", "dill.load": "dill", "dill.loads": "dill",
}


def test_package_has_no_eval_exec_pickle_yaml_load_or_os_system():
    found = []
    for rel, tree in _modules():
        for call, name, func in _calls(tree):
            if name in FORBIDDEN_CALLS:
                found.append(f"{rel}:{call.lineno} {FORBIDDEN_CALLS[name]}: {ast.unparse(call)[:80]}")
    assert not found, "\n".join(found)


def test_no_subprocess_call_goes_through_a_shell():
    found = []
    for rel, tree in _modules():
        for call, name, func in _calls(tree):
            if not (name or "").startswith("subprocess."):
                continue
            shell = _kw(call, "shell")
            if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
                found.append(f"{rel}:{call.lineno}: {ast.unparse(call)[:80]}")
            first = call.args[0] if call.args else _kw(call, "args")
            if isinstance(first, (ast.Constant, ast.JoinedStr, ast.BinOp)):  # a command *string*
                found.append(f"{rel}:{call.lineno} passes a string command: {ast.unparse(call)[:80]}")
    assert not found, "\n".join(found)


def test_numpy_loads_never_allow_pickle():
    found = []
    for rel, tree in _modules():
        for call, name, func in _calls(tree):
            if name in ("numpy.load", "np.load"):
                ap = _kw(call, "allow_pickle")
                if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                    found.append(f"{rel}:{call.lineno}")
    assert not found


# Code is imported only from a name the user typed (--arch package.module:callable) or a fixed list
# (the CLI's command modules; onnx/onnxruntime probed before an export).
IMPORT_SITES = {("ganzip/trust.py", "resolve"), ("ganzip/cli/__init__.py", "_load_commands"),
                ("ganzip/export_writers.py", "_require_onnx"),
                ("ganzip/launchers.py", "_require")}  # optional extras by fixed name: ray, submitit


def test_modules_are_imported_only_where_the_user_names_them():
    found = set()
    for rel, tree in _modules():
        for call, name, func in _calls(tree):
            if name in ("importlib.import_module", "__import__", "importlib.__import__"):
                found.add((rel, func))
    assert found <= IMPORT_SITES, found - IMPORT_SITES


def test_recipe_plugins_come_only_from_installed_entry_points():
    tree = ast.parse((PKG / "recipes.py").read_text())
    calls = _calls(tree)
    eps = [c for c, name, _ in calls if name and name.endswith("metadata.entry_points")]
    assert len(eps) == 1 and ast.unparse(_kw(eps[0], "group")) == "ENTRY_POINT_GROUP"
    from ganzip.recipes import ENTRY_POINT_GROUP

    assert ENTRY_POINT_GROUP == "ganzip.recipes"
    assert not any(name in ("importlib.import_module", "__import__", "runpy.run_path") for _, name, _ in calls)


def test_a_recipe_that_looks_like_an_import_path_is_never_imported(cli, teacher_file, data_dir, tmp_path,
                                                                    monkeypatch, request):
    marker = tmp_path / "imported.txt"
    (tmp_path / "evil_recipe_mod.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef r():\n    return {{}}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    res = cli("compress", teacher_file, "--data", data_dir, "--out", tmp_path / "o", "--recipe", "evil_recipe_mod:r",
              *FAST)
    record(request, res.assert_user_error("unknown recipe"))
    assert not marker.exists()


# ---------------------------------------------------------------- hostile files through the CLI


class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def evil_pth(tmp_path):
    marker = tmp_path / "code-ran.txt"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": _Payload(marker)}, path)
    assert not marker.exists()
    return path, marker


def test_a_pickle_that_runs_code_is_refused_by_compress_and_never_executed(cli, evil_pth, data_dir, tmp_path, request):
    path, marker = evil_pth
    res = cli("compress", path, "--data", data_dir, "--out", tmp_path / "o", *FAST)
    record(request, res.assert_user_error("--trust-pickle"))
    assert not marker.exists()


@pytest.mark.parametrize("command", ["eval", "export", "profile"])
def test_a_pickle_that_runs_code_is_refused_by_other_commands(cli, evil_pth, data_dir, request, command):
    path, marker = evil_pth
    extra = {"eval": ["--data", str(data_dir), "--size", "32", "--offline"], "export": ["--size", "32"],
             "profile": ["--size", "32"]}[command]
    res = cli(command, path, "--arch", "resnet_6blocks", "--arch-opt", "ngf=4", *extra)
    record(request, res.assert_user_error("--trust-pickle"))
    assert not marker.exists()


def test_a_pickled_vgg_file_is_read_weights_only(cli, evil_pth, teacher_file, data_dir, tmp_path, request):
    path, marker = evil_pth
    res = cli("compress", teacher_file, "--data", data_dir, "--out", tmp_path / "o", *FAST, "--steps", "2",
              "--set", f"perceptual.weights={path}", "--offline")
    record(request, res.assert_user_error("vgg16", str(path.name)))
    assert not marker.exists()


# ---------------------------------------------------------------- no network


def test_the_network_guard_sees_a_download_attempt(no_network, monkeypatch):
    # Control: with offline off, resolving a missing asset probes the network, and the guard records it.
    from ganzip import assets
    from ganzip.errors import AssetMissingError

    monkeypatch.delenv("GANZIP_OFFLINE", raising=False)
    with pytest.raises(AssetMissingError, match="not reachable"):
        assets.resolve("vgg16")
    assert no_network


@pytest.mark.parametrize("name", ["inception_fid", "vgg16", "alexnet"])
def test_missing_assets_offline_raise_without_a_connection(no_network, name):
    from ganzip import assets
    from ganzip.errors import AssetMissingError

    with pytest.raises(AssetMissingError, match="Offline") as err:
        assets.resolve(name, offline=True)
    assert err.value.exit_code == 2 and "Fix:" in str(err.value)
    assert no_network == []


def test_compress_offline_by_environment_finishes_without_a_connection(cli, no_network, teacher_file, data_dir,
                                                                       tmp_path, monkeypatch):
    monkeypatch.setenv("GANZIP_OFFLINE", "1")
    out = tmp_path / "o"
    res = cli("compress", teacher_file, "--data", data_dir, "--out", out, *FAST, "--steps", "2",
              "--set", "perceptual.weight=0")
    assert res.exit_code == 0, (res.stderr, res.exception)
    assert (out / "report.json").is_file()  # the final evaluation ran too (FID/LPIPS skipped: no weights)
    assert no_network == []


def test_compress_with_offline_flag_reports_the_missing_vgg_without_a_connection(cli, no_network, teacher_file,
                                                                                 data_dir, tmp_path, monkeypatch, request):
    monkeypatch.delenv("GANZIP_OFFLINE", raising=False)
    res = cli("compress", teacher_file, "--data", data_dir, "--out", tmp_path / "o", *FAST, "--steps", "2",
              "--offline")
    record(request, res.assert_user_error("vgg16", "offline", "perceptual.weight=0"))
    assert no_network == []


def test_eval_with_offline_flag_reports_the_missing_inception_without_a_connection(cli, no_network, teacher_file,
                                                                                   data_dir, monkeypatch, request):
    monkeypatch.delenv("GANZIP_OFFLINE", raising=False)
    res = cli("eval", teacher_file, "--arch", "resnet_6blocks", "--arch-opt", "ngf=4", "--data", data_dir,
              "--size", "32", "--offline", "--quiet")
    record(request, res.assert_user_error("pt_inception", "offline"))
    assert no_network == []


def test_fid_offline_by_environment_reports_the_missing_inception_without_a_connection(cli, no_network, data_dir,
                                                                                       monkeypatch):
    monkeypatch.setenv("GANZIP_OFFLINE", "1")
    res = cli("fid", data_dir / "trainA", data_dir / "trainB", "--quiet")
    res.assert_user_error("pt_inception", "offline")
    assert no_network == []


# ---------------------------------------------------------------- outputs


def test_a_finished_compress_writes_no_pickle_files(cli, teacher_file, data_dir, tmp_path):
    out = tmp_path / "o"
    res = cli("compress", teacher_file, "--data", data_dir, "--out", out, *FAST, "--steps", "2",
              "--set", "perceptual.weight=0", "--offline")
    assert res.exit_code == 0, (res.stderr, res.exception)
    suffixes = {p.suffix for p in out.rglob("*") if p.is_file()}
    assert suffixes <= ALLOWED_OUTPUT_SUFFIXES, suffixes
    assert ".safetensors" in suffixes


def test_an_unfinished_run_checkpoints_as_safetensors_and_json_only(teacher_file, data_dir, tmp_path):
    from ganzip.engine import compress

    out = tmp_path / "o"
    compress(str(teacher_file), arch="resnet_6blocks", arch_opts=["ngf=4"], data=str(data_dir), size=32,
             steps=4, max_steps=2, out=out, device="cpu", quiet=True, offline=True,
             overrides=["crd.patch_size=8", "perceptual.weight=0", "discriminator.ndf=4"])
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.parent.name == "checkpoint" and p.suffix == ".safetensors" for p in files)
    assert {p.suffix for p in files} <= {".safetensors", ".json", ".csv"}, files


# ---------------------------------------------------------------- manifests never reach a shell


def test_manifest_paths_are_resolved_and_passed_as_single_arguments(teacher_file, data_dir, tmp_path, monkeypatch):
    from ganzip import batch
    from ganzip.batch import worker

    weird = tmp_path / "m" / "w $(touch PWNED); `touch PWNED2` & x.safetensors"
    weird.parent.mkdir()
    weird.write_bytes(teacher_file.read_bytes())
    (tmp_path / "m" / "job.toml").write_text(
        "[[job]]\n"
        'name = "j"\n'
        f'model = "{weird.name}"\n'
        'arch = "resnet_6blocks"\n'
        "arch_opts = {ngf = 4}\n"
        f'data = "{data_dir}"\n'
        "steps = 2\nsize = 32\n"
        'set = ["crd.patch_size=8", "perceptual.weight=0"]\n'
    )
    seen = []

    class FakeWorker:  # stands in for the worker process: records how it would start, records no outcome
        def __init__(self, argv, **kwargs):
            seen.append((argv, kwargs))

        def wait(self, timeout=None):
            return 2

    monkeypatch.setattr(worker.subprocess, "Popen", FakeWorker)
    monkeypatch.chdir(tmp_path / "m")
    batch.run_batch(tmp_path / "m" / "job.toml", tmp_path / "runs", launcher="subprocess", latency=False)
    assert len(seen) == 1
    argv, kwargs = seen[0]
    assert isinstance(argv, list) and not kwargs.get("shell", False)
    job_file = Path(argv[-1])
    assert argv[-4:] == [sys.executable, "-m", "ganzip.jobrun", str(job_file)]
    assert json.loads(job_file.read_text())["job"]["model"] == str(weird.resolve())  # resolved, absolute, data
    assert not list(tmp_path.rglob("PWNED*"))

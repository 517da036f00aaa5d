"""No file can make ganzip call something the user did not choose (docs/security.md).

Every payload is tried through every path a file can name code by: a batch
manifest, a student's metadata, a generator file's metadata, and `--arch`
confirmed by the user while the file supplies the options. Each must be
refused in one line, and the test checks the payload's side effect (a marker
file), not only the message.
"""
from __future__ import annotations

import json
import sys

import pytest
import torch

from ganzip import models
from ganzip.errors import GanzipError
from ganzip.io import save_safetensors_atomic
from ganzip.loading import build_arch, load_generator
from ganzip.student import build_student, load_student, save_student
from ganzip.trust import Origin

SIZE = 16


def _payloads(marker):
    """(arch, file-supplied options) pairs that run code if called."""
    cmd = f"touch {marker}"
    return [
        ("os:system", {"command": cmd}),
        ("subprocess:getoutput", {"cmd": cmd}),
        ("builtins:exec", {"source": f"open({str(marker)!r}, 'w').write('x')"}),
        ("builtins:eval", {"source": f"open({str(marker)!r}, 'w').write('x')"}),
        ("importlib:import_module", {"name": "evil_payload_mod_xyz"}),
        ("pickle:loads", {"data": "cos\nsystem\n(S'" + cmd + "'\ntR."}),
        ("evil_factory_xyz:run", {"cmd": cmd}),  # not the standard library: a factory with file-supplied options
    ]


PAYLOAD_IDS = ["os.system", "subprocess.getoutput", "builtins.exec", "builtins.eval", "importlib.import_module",
               "pickle.loads", "third-party-factory"]


@pytest.fixture
def evil_code(tmp_path, monkeypatch):
    """A module that writes the marker when imported, and a factory that runs its `cmd` argument."""
    code = tmp_path / "code"
    code.mkdir()
    marker = tmp_path / "PWNED"
    (code / "evil_payload_mod_xyz.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    (code / "evil_factory_xyz.py").write_text("import os\n\ndef run(cmd='true'):\n    os.system(cmd)\n"
                                             "    import torch\n    return torch.nn.Identity()\n")
    monkeypatch.syspath_prepend(str(code))
    for name in ("evil_payload_mod_xyz", "evil_factory_xyz"):
        sys.modules.pop(name, None)
    return marker


def _student_file(tmp_path, arch, opts):
    """A real student whose teacher spec was hand-edited to name `arch` with `opts`."""
    teacher = models.create("resnet_6blocks", ngf=4)
    path = save_student(build_student(teacher, 0.5, size=SIZE), tmp_path / "evil.safetensors")
    from safetensors.torch import load_file, safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    meta["ganzip.teacher_spec"] = json.dumps({"arch": arch, "opts": opts})
    save_safetensors_atomic(load_file(str(path)), path, metadata=meta)
    return path


def _generator_file(tmp_path, arch, opts):
    sd = models.create("resnet_6blocks", ngf=4).state_dict()
    meta = {"ganzip.format": "generator", "ganzip.arch_spec": json.dumps({"arch": arch, "opts": opts})}
    save_safetensors_atomic(sd, tmp_path / "gen.safetensors", metadata=meta)
    return tmp_path / "gen.safetensors"


@pytest.mark.parametrize("index", range(7), ids=PAYLOAD_IDS)
def test_a_student_file_cannot_run_its_payload_even_with_the_name_confirmed(index, tmp_path, evil_code, cli):
    arch, opts = _payloads(evil_code)[index]
    path = _student_file(tmp_path, arch, opts)
    before = path.read_bytes()
    cli("export", path, "--size", SIZE, "--no-latency").assert_user_error()  # unconfirmed: nothing imported
    cli("export", path, "--arch", arch, "--size", SIZE, "--no-latency").assert_user_error()  # name confirmed
    cli("eval", path, "--arch", arch, "--data", "builtin:edges2shapes", "--size", SIZE).assert_user_error()
    with pytest.raises(GanzipError):
        load_student(path, arch=arch)
    assert not evil_code.exists(), "the payload ran"
    assert "evil_payload_mod_xyz" not in sys.modules
    assert path.read_bytes() == before


@pytest.mark.parametrize("index", range(7), ids=PAYLOAD_IDS)
def test_a_generator_file_cannot_run_its_payload(index, tmp_path, evil_code, cli):
    arch, opts = _payloads(evil_code)[index]
    path = _generator_file(tmp_path, arch, opts)
    cli("profile", path, "--size", SIZE, "--repeats", "1").assert_user_error()
    cli("profile", path, "--arch", arch, "--size", SIZE, "--repeats", "1").assert_user_error()
    with pytest.raises(GanzipError):
        load_generator(path, arch=arch)
    assert not evil_code.exists(), "the payload ran"
    assert "evil_payload_mod_xyz" not in sys.modules


@pytest.mark.parametrize("index", range(7), ids=PAYLOAD_IDS)
def test_a_manifest_cannot_run_its_payload(index, tmp_path, evil_code, cli):
    arch, opts = _payloads(evil_code)[index]
    torch.save(models.create("resnet_6blocks", ngf=4).state_dict(), tmp_path / "any.pth")
    opts_toml = ", ".join(f"{k} = {json.dumps(v)}" for k, v in opts.items())
    manifest = tmp_path / "m.toml"
    manifest.write_text('[defaults]\ndata = "builtin:edges2shapes"\nsize = 64\nsteps = 1\n'
                        f'[[job]]\nname = "j"\nmodel = "any.pth"\narch = "{arch}"\narch_opts = {{{opts_toml}}}\n')
    line = cli("batch", manifest, "--dry-run").assert_user_error("m.toml:")
    assert "--trust-code" in line or "standard-library" in line
    cli("batch", manifest).assert_user_error("m.toml:")
    assert not evil_code.exists(), "the payload ran"
    assert not (tmp_path / "m-runs").exists()


@pytest.mark.parametrize("arch", ["os:system", "subprocess:getoutput", "builtins:exec", "builtins:eval",
                                  "importlib:import_module", "pickle:loads"])
def test_standard_library_callables_are_refused_even_when_typed(arch, tmp_path, cli):
    marker = tmp_path / "PWNED"
    cli("profile", "--arch", arch, "--arch-opt", f"command=touch {marker}", "--size", SIZE).assert_user_error(
        "standard-library")
    assert not marker.exists()


def test_trust_code_lets_a_trusted_manifest_name_a_module_class(tmp_path, cli, monkeypatch):
    (tmp_path / "goodgen_xyz.py").write_text("from ganzip.models.resnet import ResnetGenerator as G\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save(models.create("resnet_6blocks", ngf=4).state_dict(), tmp_path / "g.pth")
    (tmp_path / "m.toml").write_text('[[job]]\nname = "j"\nmodel = "g.pth"\narch = "goodgen_xyz:G"\n'
                                     'arch_opts = {ngf = 4, n_blocks = 6}\ndata = "builtin:edges2shapes"\n')
    cli("batch", tmp_path / "m.toml", "--dry-run").assert_user_error("--trust-code")
    res = cli("batch", tmp_path / "m.toml", "--dry-run", "--trust-code")
    assert res.exit_code == 0, res.stderr
    assert "runs code from goodgen_xyz:G" in res.stdout


def test_a_factory_from_a_file_runs_once_its_options_are_confirmed(tmp_path, monkeypatch):
    (tmp_path / "okfactory_xyz.py").write_text(
        "from ganzip.models.resnet import ResnetGenerator\n\ndef make(ngf=8):\n    return ResnetGenerator(ngf=ngf, n_blocks=1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    teacher = build_arch("okfactory_xyz:make", {"ngf": 4})
    path = save_student(build_student(teacher, 0.5, size=SIZE), tmp_path / "s.safetensors")
    with pytest.raises(GanzipError, match="arch_opts=.'ngf': 4"):
        load_student(path, arch="okfactory_xyz:make")
    with pytest.raises(GanzipError, match="arch_opts=.'ngf': 4"):  # a different value is not a confirmation
        load_student(path, arch="okfactory_xyz:make", arch_opts={"ngf": 5})
    assert load_student(path, arch="okfactory_xyz:make", arch_opts={"ngf": 4})(torch.zeros(1, 3, SIZE, SIZE)).shape[1] == 3
    assert load_student(path, arch="okfactory_xyz:make", trust_code=True) is not None


def test_a_file_cannot_describe_a_model_too_large_to_allocate(tmp_path, cli):
    path = _generator_file(tmp_path, "resnet_9blocks", {"ngf": 1000})
    line = cli("profile", path, "--size", SIZE).assert_user_error("GANZIP_MAX_PARAMS")
    assert "parameters" in line
    with pytest.raises(GanzipError, match="limit"):
        build_arch("resnet_9blocks", {"ngf": 1000}, origin=Origin(source="a file"))

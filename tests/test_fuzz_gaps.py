"""Fuzzing the readers the other property tests leave out: random bytes and strings either parse or raise GanzipError.

Covered elsewhere: `--set` (tests/test_recipes_properties.py, random text),
image files (tests/test_data_properties.py, random bytes behind real magic
numbers). tests/test_manifest_properties.py checks manifest *structure*
(valid TOML); here manifests are random text, random bytes and mutated
valid manifests. Also fuzzed: model checkpoints (.pth, .safetensors, zip
archives), --arch-opt, recipe TOML files, FID statistics (.npz) and OUT's
run.json marker.
"""
from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from ganzip.errors import GanzipError

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

VALID_MANIFEST = """out = "runs"

[defaults]
data = "builtin:solid2striped"
steps = 3
size = 64
set = {"crd.patch_size" = 16, "perceptual.weight" = 0}

[[job]]
name = "a"
model = "teacher.safetensors"
arch = "resnet_6blocks"
arch_opts = {ngf = 4}
widths = [0.25, 0.5]

[[job]]
name = "b"
model = "teacher.safetensors"
arch = "resnet_6blocks"
arch_opts = {ngf = 4}
recipe = "crd-no-d"
set = ["crd.weight=10"]
"""


def parses_or_refuses(fn, *args, **kwargs):
    """Call fn: (result, None) or (None, the GanzipError); any other exception is the bug.

    Each test then checks the answer against what the input is: an input meant
    to be refused must not come back accepted, and an accepted one must hold
    what it says.
    """
    try:
        return fn(*args, **kwargs), None
    except GanzipError as exc:
        return None, exc


def _toml_or_none(text: str):
    import tomllib

    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, ValueError):
        return None


def check_manifest_answer(path: Path, text: str | None) -> None:
    """Accepted: valid TOML whose jobs have unique safe names, existing model files and widths in (0, 1].
    Refused: the error names the manifest file."""
    import re

    from ganzip.batch import load_manifest

    m, err = parses_or_refuses(load_manifest, path)
    if err is not None:
        assert str(path) in str(err), str(err)
        return
    assert text is not None and _toml_or_none(text) is not None, "a manifest that is not TOML was accepted"
    names = [j.name for j in m.jobs]
    assert m.jobs and len(set(names)) == len(names)
    for job in m.jobs:
        assert re.match(r"^[A-Za-z0-9][A-Za-z0-9._+@-]*$", job.name), job.name
        assert job.model.is_file() and 0 < job.width <= 1


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from safetensors.torch import save_file

    from ganzip import models

    root = tmp_path_factory.mktemp("fuzz")
    torch.manual_seed(0)  # random weights: no pretrained generator exists here
    save_file(models.create("resnet_6blocks", ngf=4).state_dict(), str(root / "teacher.safetensors"))
    return root


# ---------------------------------------------------------------- manifests


@settings(max_examples=150, **SETTINGS)
@given(text=st.text(max_size=400))
def test_any_manifest_text_parses_or_raises_ganzip_error(workdir, text):
    from ganzip.batch import load_manifest

    path = workdir / "m.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        decoded = text.encode("utf-8", "surrogatepass").decode("utf-8")
    except UnicodeDecodeError:
        decoded = None
    check_manifest_answer(path, decoded)


@settings(max_examples=100, **SETTINGS)
@given(data=st.binary(max_size=400))
def test_any_manifest_bytes_parse_or_raise_ganzip_error(workdir, data):
    from ganzip.batch import load_manifest

    path = workdir / "m.toml"
    path.write_bytes(data)
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        decoded = None
    check_manifest_answer(path, decoded)


@settings(max_examples=200, **SETTINGS)
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID_MANIFEST)), st.integers(0, 3),
                                st.text(alphabet="[]{}=\"',.#\n 0123456789abcxyz-_@", max_size=4)),
                      min_size=1, max_size=4))
def test_mutated_manifests_parse_or_raise_ganzip_error(workdir, edits):
    from ganzip.batch import load_manifest

    text = VALID_MANIFEST
    for pos, cut, insert in edits:
        pos = min(pos, len(text))
        text = text[:pos] + insert + text[pos + cut:]
    path = workdir / "m.toml"
    path.write_text(text)
    check_manifest_answer(path, text)


def test_the_valid_manifest_parses(workdir):
    from ganzip.batch import load_manifest

    (workdir / "m.toml").write_text(VALID_MANIFEST)
    assert [j.name for j in load_manifest(workdir / "m.toml").jobs] == ["a@w0.25", "a@w0.5", "b"]


# ---------------------------------------------------------------- model checkpoints


def _load(path: Path):
    from ganzip.loading import load_generator

    return load_generator(str(path), arch="resnet_6blocks", arch_opts={"ngf": 4})


ZIP_HEAD = b"PK\x03\x04"


@settings(max_examples=150, **SETTINGS)
@given(head=st.sampled_from([b"", ZIP_HEAD, b"\x80\x02", b"\x80\x04\x95", b"\x08\x00\x00\x00\x00\x00\x00\x00{"]),
       data=st.binary(max_size=600), suffix=st.sampled_from([".pth", ".pt", ".safetensors", ".ckpt"]))
def test_random_bytes_as_a_checkpoint_raise_ganzip_error(workdir, head, data, suffix):
    path = workdir / f"noise{suffix}"
    path.write_bytes(head + data)
    assume(path.stat().st_size > 0)
    with pytest.raises(GanzipError):
        _load(path)


@settings(max_examples=60, **SETTINGS)
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.integers(1, 10**6)), fmt=st.sampled_from(["safetensors", "pth"]))
def test_damaged_real_checkpoints_load_or_raise_ganzip_error(workdir, flips, cut, fmt):
    src = workdir / "teacher.safetensors"
    if fmt == "pth":
        from safetensors.torch import load_file

        src = workdir / "teacher.pth"
        if not src.exists():
            torch.save(load_file(str(workdir / "teacher.safetensors")), src)
    data = bytearray(src.read_bytes())
    for pos, value in flips:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data) or 1]
    path = workdir / f"damaged.{fmt}"
    path.write_bytes(bytes(data))
    model, err = parses_or_refuses(_load, path)
    if err is not None:
        assert "damaged" in str(err), str(err)  # the error names the file
    else:  # flipped weight bytes can still load: then it is a whole generator
        with torch.no_grad():
            assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)


@settings(max_examples=60, **SETTINGS)
@given(names=st.lists(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1,
                              max_size=12), min_size=1, max_size=4, unique=True),
       data=st.binary(max_size=200))
def test_zip_archives_with_random_members_raise_ganzip_error(workdir, names, data):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in names:
            zf.writestr(name, data)
    path = workdir / "archive.pth"
    path.write_bytes(buf.getvalue())
    with pytest.raises(GanzipError):
        _load(path)


# ---------------------------------------------------------------- --arch-opt and recipe files


@settings(max_examples=300, **SETTINGS)
@given(items=st.lists(st.text(max_size=30), max_size=4))
def test_any_arch_opts_parse_or_raise_ganzip_error(items):
    from ganzip.loading import parse_arch_opts

    opts, err = parses_or_refuses(parse_arch_opts, items)
    well_formed = all("=" in i and i.partition("=")[0].strip().isidentifier() for i in items)
    if err is None:
        assert well_formed, f"{items!r} was accepted"
        assert all(k.isidentifier() for k in opts)
        assert set(opts) == {i.partition("=")[0].strip() for i in items}
    else:
        assert not well_formed or "arch-opt" in str(err)


@settings(max_examples=150, **SETTINGS)
@given(text=st.text(max_size=300))
@example(text='extends = "crd"\n[crd]\nweight = "x"\n')
@example(text='extends = 3\n')
@example(text='[train]\nsteps = -1\n')
@example(text='crd = 1\n')
@example(text='[crdd]\nweight = 1\n')  # a misspelt section must be refused
@example(text='[crd]\nweight = 3\n[train]\nsteps = 7\n')  # and a good file is taken as written
def test_any_recipe_file_parses_or_raises_ganzip_error(workdir, text):
    from ganzip.recipes import resolve_recipe

    from ganzip.config import META_KEYS, SECTIONS

    path = workdir / "r.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    cfg, err = parses_or_refuses(resolve_recipe, str(path))
    if err is None:
        doc = _toml_or_none(text)
        assert doc is not None, "a recipe file that is not TOML was accepted"
        assert set(doc) <= set(SECTIONS) | set(META_KEYS), f"unknown sections accepted: {sorted(doc)}"
        for section, table in doc.items():
            if section in SECTIONS:  # every value written in the file is the one in effect
                for key, value in table.items():
                    assert getattr(getattr(cfg, section), key) == value


# ---------------------------------------------------------------- FID statistics


@settings(max_examples=150, **SETTINGS)
@given(head=st.sampled_from([b"", ZIP_HEAD, b"\x93NUMPY\x01\x00"]), data=st.binary(max_size=400))
def test_random_bytes_as_fid_statistics_raise_ganzip_error(workdir, head, data):
    from ganzip.metrics.fid import load_stats

    path = workdir / "s.npz"
    path.write_bytes(head + data)
    with pytest.raises(GanzipError):
        load_stats(path)


array = st.one_of(
    st.builds(np.zeros, st.tuples(st.integers(0, 3))),
    st.builds(np.zeros, st.tuples(st.integers(0, 3), st.integers(0, 3))),
    st.builds(np.asarray, st.text(max_size=10)),
    st.builds(np.asarray, st.floats(allow_nan=True)),
    st.builds(np.asarray, st.integers(-5, 5)),
)


@settings(max_examples=150, **SETTINGS)
@given(arrays=st.dictionaries(st.sampled_from(["mu", "sigma", "count", "protocol", "features", "other"]), array,
                              max_size=5))
@example(arrays={"mu": np.zeros(2), "sigma": np.zeros((2, 2)), "count": np.zeros(2)})
@example(arrays={"mu": np.zeros(2), "sigma": np.zeros((2, 2)), "protocol": np.asarray("{not json")})
def test_npz_files_with_any_arrays_load_or_raise_ganzip_error(workdir, arrays):
    from ganzip.metrics.fid import load_stats

    path = workdir / "s.npz"
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    stats, err = parses_or_refuses(load_stats, path)
    if stats is not None:
        assert {"mu", "sigma"} <= set(arrays), "statistics without mu and sigma were accepted"
        d = stats.mu.shape[0]
        assert arrays["mu"].shape == (d,) and stats.sigma.shape == (d, d)
        assert np.isfinite(stats.mu).all() and np.isfinite(stats.sigma).all()
    else:
        assert str(path) in str(err)


# ---------------------------------------------------------------- OUT's run.json marker


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=3), max_leaves=8)


@settings(max_examples=150, **SETTINGS)
@given(content=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                         st.dictionaries(st.sampled_from(["kind", "status"]),
                                         st.sampled_from(["ganzip-compress", "finished", "running", 3, None]))
                         .map(lambda v: json.dumps(v).encode())))
@example(content=b"[]")
@example(content=b'"ganzip-compress"')
def test_any_run_marker_in_out_is_decided_or_refused_with_ganzip_error(content):
    from ganzip.engine import prepare_out

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "run.json").write_bytes(content)
        mode, err = parses_or_refuses(prepare_out, out, resume=True, overwrite=False)
        try:
            marker = json.loads(content)
        except ValueError:
            marker = None
        ours = isinstance(marker, dict) and marker.get("kind") == "ganzip-compress"
        if ours and marker.get("status") != "finished":
            assert mode == "fresh" and err is None  # an unfinished run without a checkpoint starts over
        else:  # not ganzip's marker, or a finished run without --overwrite
            assert mode is None and err is not None

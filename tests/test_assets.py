"""ganzip.assets: where pretrained files are found, hash checks, import, and the `ganzip assets` command.

No real pretrained file exists here: tests register a toy asset whose
published hash is that of a small file made in the test.
"""
from __future__ import annotations

import hashlib
import json
import re

import pytest

from ganzip import assets
from ganzip.errors import AssetMissingError, GanzipError


@pytest.fixture(autouse=True)
def homes(tmp_path, monkeypatch):
    """Point every cache at empty folders of this test."""
    monkeypatch.setenv("GANZIP_HOME", str(tmp_path / "ganzip"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("GANZIP_OFFLINE", "1")
    return tmp_path


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A registered asset 'toy' whose published hash is that of the bytes b'toy weights'."""
    data = b"toy weights"
    spec = assets.AssetSpec(name="toy", filename="toy-1234.pth", sha256=hashlib.sha256(data).hexdigest(),
                            url="https://example.invalid/toy-1234.pth", flag="--toy-weights", description="toy")
    monkeypatch.setitem(assets._REGISTRY, "toy", spec)
    good = tmp_path / "download" / "toy-1234.pth"
    good.parent.mkdir()
    good.write_bytes(data)
    return spec, good


def test_registry_hashes_start_with_the_prefix_in_the_published_file_names():
    for name in ("inception_fid", "alexnet", "vgg16"):
        spec = assets.get_spec(name)
        prefix = re.search(r"-([0-9a-f]{8})\.pth$", spec.filename).group(1)
        assert len(spec.sha256) == 64
        assert spec.sha256.startswith(prefix)
        assert spec.url.endswith(spec.filename)


def test_missing_asset_error_names_the_file_the_places_and_the_fix(homes):
    with pytest.raises(AssetMissingError) as err:
        assets.resolve("inception_fid")
    msg = str(err.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in msg
    assert str(homes / "ganzip" / "assets") in msg
    assert str(homes / "torch" / "hub" / "checkpoints") in msg
    assert "ganzip assets import" in msg and "inception_weights=" in msg  # the Python keyword, from the library


def test_explicit_path_is_used_even_with_another_hash_and_recorded_unverified(tmp_path):
    standin = tmp_path / "my_inception.pth"
    standin.write_bytes(b"not the real weights")
    with pytest.warns(assets.UnverifiedAssetWarning, match="unverified"):
        found = assets.resolve("inception_fid", standin)
    assert found == standin
    record = assets.asset_record("inception_fid", found)
    assert record["verified"] is False
    assert record["sha256"] == hashlib.sha256(b"not the real weights").hexdigest()
    assert record["expected_sha256"] == assets.get_spec("inception_fid").sha256


def test_explicit_path_that_does_not_exist_is_a_clear_error(tmp_path):
    with pytest.raises(AssetMissingError, match="no such file"):
        assets.resolve("alexnet", tmp_path / "nope.pth")


def test_ganzip_home_comes_before_the_torch_hub_cache(homes, toy):
    spec, good = toy
    for folder in (homes / "ganzip" / "assets", homes / "torch" / "hub" / "checkpoints"):
        folder.mkdir(parents=True)
        (folder / spec.filename).write_bytes(good.read_bytes())
    assert assets.resolve("toy") == homes / "ganzip" / "assets" / spec.filename


def test_the_torch_hub_cache_is_searched(homes, toy):
    spec, good = toy
    hub = homes / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / spec.filename).write_bytes(good.read_bytes())
    assert assets.resolve("toy") == hub / spec.filename
    assert assets.asset_record("toy", hub / spec.filename)["verified"] is True


def test_a_cached_file_with_the_wrong_hash_is_refused(homes, toy):
    spec, _ = toy
    bad = homes / "ganzip" / "assets" / spec.filename
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"corrupt")
    with pytest.raises(GanzipError, match=spec.sha256) as err:
        assets.resolve("toy")
    assert not isinstance(err.value, AssetMissingError)
    assert str(bad) in str(err.value)


def test_offline_never_downloads(toy, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download while offline")

    monkeypatch.setattr(assets, "download", no_network)
    monkeypatch.setattr(assets, "_reachable", lambda url, timeout=3.0: True)
    with pytest.raises(AssetMissingError, match="Offline"):
        assets.resolve("toy")  # GANZIP_OFFLINE=1 from the fixture
    monkeypatch.setenv("GANZIP_OFFLINE", "0")
    with pytest.raises(AssetMissingError, match="Offline"):
        assets.resolve("toy", offline=True)


def test_a_hash_prefix_spec_checks_the_prefix(tmp_path, monkeypatch):
    data = b"prefix only"
    digest = hashlib.sha256(data).hexdigest()
    spec = assets.AssetSpec(name="pre", filename="pre.pth", sha256=digest[:8], url="https://example.invalid/pre.pth")
    monkeypatch.setitem(assets._REGISTRY, "pre", spec)
    f = tmp_path / "pre.pth"
    f.write_bytes(data)
    record = assets.asset_record("pre", f)
    assert record["verified"] is True and "prefix" in record["note"]
    f.write_bytes(b"other")
    assert assets.verify("pre", f) is False


def test_import_installs_a_file_with_the_published_hash(homes, toy):
    spec, good = toy
    dest = assets.import_asset(good)  # recognised by its hash
    assert dest == homes / "ganzip" / "assets" / spec.filename
    assert dest.read_bytes() == good.read_bytes()
    assert assets.resolve("toy") == dest


def test_import_refuses_a_file_with_another_hash(homes, toy, tmp_path):
    spec, _ = toy
    wrong = tmp_path / spec.filename
    wrong.write_bytes(b"something else")
    with pytest.raises(GanzipError, match="not installed"):
        assets.import_asset(wrong)
    assert not (homes / "ganzip" / "assets" / spec.filename).exists()


def test_timm_copy_of_vgg16_is_found_last_and_marked_unverified(homes):
    import torch
    from safetensors.torch import save_file

    snap = homes / "hf" / "models--timm--vgg16.tv_in1k" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    save_file({"features.0.weight": torch.ones(2, 3, 3, 3), "pre_logits.fc1.weight": torch.ones(2, 2)},
              str(snap / "model.safetensors"))
    with pytest.warns(assets.UnverifiedAssetWarning, match="timm"):
        found = assets.resolve("vgg16")
    assert found == snap / "model.safetensors"
    assert assets.asset_record("vgg16", found)["verified"] is False
    assert set(assets.load_state_dict("vgg16", found)) == {"features.0.weight"}


def test_status_lists_locations_and_presence(homes, toy):
    spec, good = toy
    st = assets.status("toy")
    assert st["present"] is False and st["verified"] is None
    assert st["locations"][0] == str(homes / "ganzip" / "assets" / spec.filename)
    assets.import_asset(good)
    st = assets.status("toy")
    assert st["present"] is True and st["verified"] is True


def test_cli_assets_lists_every_asset_as_json(cli):
    res = cli("assets", "--json")
    assert res.exit_code == 0, res.stderr
    entries = {e["name"]: e for e in json.loads(res.stdout)["assets"]}
    assert {"inception_fid", "alexnet", "vgg16"} <= set(entries)
    assert entries["alexnet"]["sha256"] == assets.get_spec("alexnet").sha256
    assert entries["alexnet"]["present"] is False


def test_cli_import_with_a_wrong_hash_exits_2_with_one_line(cli, tmp_path):
    f = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    f.write_bytes(b"fake")
    res = cli("assets", "import", f, "--name", "inception_fid")
    res.assert_user_error("not installed", "sha-256")


def test_download_is_hash_checked_and_leaves_nothing_on_a_mismatch(homes, tmp_path, monkeypatch):
    # A file:// URL stands in for the network (there is none here).
    data = b"served bytes"
    served = tmp_path / "served.pth"
    served.write_bytes(data)
    good = assets.AssetSpec(name="dl", filename="dl.pth", sha256=hashlib.sha256(data).hexdigest(),
                            url=served.as_uri())
    monkeypatch.setitem(assets._REGISTRY, "dl", good)
    dest = assets.download("dl")
    assert dest == homes / "ganzip" / "assets" / "dl.pth" and dest.read_bytes() == data
    dest.unlink()
    monkeypatch.setitem(assets._REGISTRY, "dl", assets.AssetSpec(name="dl", filename="dl.pth", sha256="0" * 64,
                                                                  url=served.as_uri()))
    with pytest.raises(GanzipError, match="not installed"):
        assets.download("dl")
    assert list((homes / "ganzip" / "assets").iterdir()) == []

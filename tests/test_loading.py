"""load_generator: every format users bring, and a clear error for every bad one."""
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from ganzip import models
from ganzip.errors import GanzipError
from ganzip.loading import load_generator, parse_arch_opts


def junyanz_state_dict(model):
    """A state dict as old pytorch-CycleGAN-and-pix2pix checkpoints hold it:
    DataParallel `module.` prefixes and legacy InstanceNorm running_* buffers."""
    sd = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.InstanceNorm2d):
            sd[f"module.{name}.running_mean"] = torch.zeros(m.num_features)
            sd[f"module.{name}.running_var"] = torch.ones(m.num_features)
    return sd


def _same(a, b, size=64):
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_junyanz_checkpoint_with_legacy_keys_loads(tmp_path, tiny_resnet):
    path = tmp_path / "latest_net_G.pth"
    torch.save(junyanz_state_dict(tiny_resnet), path)
    g = load_generator(path, arch="resnet_6blocks", arch_opts=["ngf=8"])
    assert _same(g, tiny_resnet)


@pytest.mark.parametrize("key", ["state_dict", "netG", "netG_A", "model"])
def test_wrapped_state_dicts_are_unwrapped(tmp_path, tiny_resnet, key):
    path = tmp_path / "ckpt.pt"
    torch.save({key: tiny_resnet.state_dict(), "epoch": 3}, path)
    assert _same(load_generator(path, arch="resnet_6blocks", arch_opts={"ngf": 8}), tiny_resnet)


def test_safetensors_state_dict_loads(tmp_path, tiny_resnet):
    path = tmp_path / "g.safetensors"
    save_file(tiny_resnet.state_dict(), str(path))
    assert _same(load_generator(path, arch="resnet_6blocks", arch_opts=["ngf=8"]), tiny_resnet)


def test_torchscript_archive_loads_without_arch(tmp_path, tiny_resnet):
    path = tmp_path / "g.pt"
    torch.jit.script(tiny_resnet).save(str(path))
    assert _same(load_generator(path), tiny_resnet)


def test_pickled_module_needs_trust_pickle(tmp_path, tiny_resnet):
    path = tmp_path / "whole.pth"
    torch.save(tiny_resnet, path)
    with pytest.raises(GanzipError, match="trust_pickle=True"):
        load_generator(path)
    assert _same(load_generator(path, trust_pickle=True), tiny_resnet)


def test_user_factory_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "mygens.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        class TwoConv(nn.Module):
            def __init__(self, width=8):
                super().__init__()
                self.a = nn.Conv2d(3, width, 3, padding=1)
                self.b = nn.Conv2d(width, 3, 3, padding=1)
            def forward(self, x):
                return self.b(self.a(x).relu()).tanh()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    g = load_generator(None, arch="mygens:TwoConv", arch_opts=["width=5"])
    assert g.a.out_channels == 5


def test_arch_opts_are_typed():
    assert parse_arch_opts(["ngf=16", "norm=batch", "use_dropout=true", "x=0.5"]) == {
        "ngf": 16, "norm": "batch", "use_dropout": True, "x": 0.5}


def test_mismatch_names_keys_and_suggests_the_fix(tmp_path, tiny_resnet):
    path = tmp_path / "g.pth"
    torch.save(tiny_resnet.state_dict(), path)
    with pytest.raises(GanzipError) as err:
        load_generator(path, arch="resnet_6blocks", arch_opts=["ngf=8", "norm=batch"])
    assert "missing" in str(err.value) and "arch_opts={'norm': 'instance'}" in str(err.value)
    with pytest.raises(GanzipError, match="'ngf': 8"):
        load_generator(path, arch="resnet_6blocks")
    with pytest.raises(GanzipError, match="arch='resnet_6blocks'"):
        load_generator(path, arch="resnet_9blocks", arch_opts=["ngf=8"])


def test_bare_state_dict_without_arch_asks_for_one(tmp_path, tiny_resnet):
    path = tmp_path / "g.pth"
    torch.save(tiny_resnet.state_dict(), path)
    with pytest.raises(GanzipError, match="arch="):
        load_generator(path)

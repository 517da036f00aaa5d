"""MACs of TorchScript archives: counted as the ops run, by torchprofile's rules.

The reference is torchprofile itself on the eager model (an independent
count, from a trace); the archive's count comes from ganzip's dispatch
recorder. They must agree on every zoo family and on the third-party
architectures whose forward both paths see alike.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from click.testing import CliRunner
from torchprofile import profile_macs

import ganzip.models as zoo
from ganzip.cli import main
from ganzip.loading import load_generator
from ganzip.metrics.cost import count_macs
from ganzip.metrics.dispatch_macs import count_macs_by_dispatch, needs_dispatch_count

from .third_party_models import CATALOGUE, build

ZOO = [("resnet_6blocks", {"ngf": 8}, 64), ("resnet_9blocks", {"ngf": 8, "norm": "batch"}, 64),
       ("unet_128", {"ngf": 8}, 128), ("mobile_resnet_9blocks", {"ngf": 8}, 64), ("patchgan", {"ndf": 8}, 64)]
# Where the two counts differ by design: torchprofile's trace does not see ops
# on detached weights (SPAN rebuilds its eval conv from them in every forward)
# or inside a custom autograd Function (NAFNet's LayerNorm2d); the dispatcher does.
DIFFERS = {"SPAN", "NAFNet"}
# torchprofile also counts the traced shape arithmetic (`h * scale` on ints) as
# one MAC per product; a few such products are allowed.
SHAPE_ARITHMETIC = 8


def _script(model: torch.nn.Module, x: torch.Tensor, how: str) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.script(model) if how == "script" else torch.jit.trace(model, x, check_trace=False)


@pytest.mark.parametrize("how", ["script", "trace"])
@pytest.mark.parametrize("name,opts,size", ZOO, ids=[z[0] for z in ZOO])
def test_an_archive_of_a_zoo_model_counts_what_torchprofile_counts_on_the_eager_model(name, opts, size, how):
    model = zoo.create(name, **opts).eval()
    x = torch.randn(1, 3, size, size)
    reference = profile_macs(model, x)
    archive = _script(model, x, how)
    assert needs_dispatch_count(archive) and not needs_dispatch_count(model)
    assert count_macs_by_dispatch(archive, x) == reference
    assert count_macs(archive, size) == reference


@pytest.mark.parametrize("entry", [e for e in CATALOGUE if e.name not in DIFFERS and "deep" not in e.tags],
                         ids=lambda e: e.name)
def test_third_party_models_count_alike_both_ways(entry):
    model = build(entry)
    x = torch.randn(1, entry.in_channels, entry.size, entry.size)
    reference = profile_macs(model, x)
    assert abs(count_macs_by_dispatch(model, x) - reference) <= SHAPE_ARITHMETIC
    assert reference > 0


def test_a_model_holding_a_scripted_part_is_counted_by_dispatch():
    inner = torch.jit.script(zoo.create("resnet_6blocks", ngf=4).eval())
    outer = torch.nn.Sequential(torch.nn.Identity(), inner)
    assert needs_dispatch_count(outer)
    assert count_macs(outer, 32) == profile_macs(zoo.create("resnet_6blocks", ngf=4).eval(), torch.randn(1, 3, 32, 32))


def test_profile_cli_reports_the_macs_of_a_scripted_archive(tmp_path):
    model = zoo.create("resnet_6blocks", ngf=4).eval()
    path = tmp_path / "scripted.pt"
    _script(model, None, "script").save(str(path))
    res = CliRunner().invoke(main, ["profile", str(path), "--size", "64", "--no-latency", "--json"])
    assert res.exit_code == 0, res.output
    reference = profile_macs(model, torch.randn(1, 3, 64, 64))
    assert str(reference) in res.output.replace(",", "")
    assert count_macs(load_generator(str(path)), 64) == reference

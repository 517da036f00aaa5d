"""The zoo reproduces the paper's cost figures exactly (spec §6)."""
import pytest
import torch

from ganzip import models
from ganzip.metrics.cost import count_macs, count_params
from ganzip.student import build_student


@pytest.mark.parametrize(
    "name, opts, macs, params",
    [
        ("resnet_9blocks", dict(ngf=64), 56_799_264_768, 11_378_179),
        ("mobile_resnet_9blocks", dict(ngf=64), 18_314_428_416, 1_987_075),
        ("mobile_resnet_9blocks", dict(ngf=16), 1_407_713_280, 137_347),
        ("unet_256", dict(ngf=16, norm="batch"), 1_219_449_856, 3_404_451),
    ],
)
def test_zoo_cost_matches_the_papers_tables(name, opts, macs, params):
    m = models.create(name, **opts)
    assert count_params(m) == params
    assert count_macs(m, 256) == macs
    # and as spec §6 prints it (G MACs to the printed digits)
    printed = {"resnet_9blocks": "56.80G", "mobile_resnet_9blocks": "18.31G" if opts["ngf"] == 64 else "1.408G",
               "unet_256": "1.219G"}[name]
    digits = len(printed.split(".")[1]) - 1
    assert f"{count_macs(m, 256) / 1e9:.{digits}f}G" == printed


def test_unet_256_ngf64_params():
    assert count_params(models.create("unet_256", ngf=64, norm="batch")) == 54_413_955


@pytest.mark.parametrize(
    "name, opts, size, macs, params",
    [
        ("mobile_resnet_9blocks", dict(ngf=64), 64, 1_407_713_280, 137_347),
        ("unet_256", dict(ngf=64, norm="batch"), 256, 1_219_449_856, 3_404_451),
    ],
)
def test_quarter_width_students_are_the_papers_students(name, opts, size, macs, params):
    student = build_student(models.create(name, **opts), 0.25, size=size)
    assert count_params(student) == params
    assert count_macs(student, 256) == macs


@pytest.mark.parametrize("name", ["resnet_6blocks", "resnet_9blocks", "unet_128", "unet_256", "mobile_resnet_9blocks"])
@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
def test_generators_map_images_to_images_in_tanh_range(name, norm):
    m = models.create(name, ngf=4, norm=norm, use_dropout=True) if "mobile" not in name else models.create(name, ngf=4, norm=norm)
    size = getattr(m, "min_size", 64)
    y = m.eval()(torch.randn(1, 3, size, size))
    assert y.shape == (1, 3, size, size)
    assert y.abs().max() <= 1.0


def test_patchgan_outputs_a_grid_of_logits():
    d = models.create("patchgan", ndf=8)
    assert d(torch.randn(2, 3, 64, 64)).shape == (2, 1, 6, 6)


def test_registry_lists_generators_and_rejects_unknown_options():
    assert set(models.list_models("generator")) == {
        "resnet_6blocks", "resnet_9blocks", "unet_128", "unet_256", "mobile_resnet_9blocks"}
    from ganzip.errors import GanzipError

    with pytest.raises(GanzipError, match="ngf"):
        models.create("resnet_9blocks", nfg=3)

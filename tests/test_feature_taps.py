"""Feature taps: the "auto" layer rule on a generator defined in the tests (tests/skipnet.py), the checks,
and the hooks' life cycle."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ganzip.errors import GanzipError
from ganzip.features import FeatureTaps, auto_layers, candidate_layers, resolve_taps, spread, taps_text
from ganzip.student import build_student

from .skipnet import SkipNet


EXAMPLE = torch.zeros(1, 3, 32, 32)


def test_auto_taps_on_a_class_defined_here_are_the_resolution_stages_and_the_residual_blocks():
    torch.manual_seed(0)
    teacher = SkipNet()
    assert candidate_layers(teacher, EXAMPLE) == [
        ("down.2", "resolution"), ("blocks.0", "block"), ("blocks.1", "block"), ("up.2", "resolution")]
    # the layers inside a block are not taps; the generator's output never is


def test_auto_taps_match_by_name_in_a_pruned_student_with_fewer_channels():
    torch.manual_seed(0)
    teacher = SkipNet()
    student = build_student(teacher, 0.5, size=32)
    taps = resolve_taps(teacher, student, ["auto"], EXAMPLE)
    assert [(t.name, t.teacher, t.student) for t in taps] == [
        ("down.2", (32, 16, 16), (16, 16, 16)), ("blocks.0", (32, 16, 16), (16, 16, 16)),
        ("blocks.1", (32, 16, 16), (16, 16, 16)), ("up.2", (16, 32, 32), (8, 32, 32))]
    text = taps_text(taps)
    assert "blocks.0" in text and "32x16x16" in text and "16x16x16" in text
    assert taps[0].describe()["teacher_channels"] == 32 and taps[0].describe()["student_channels"] == 16


def test_auto_taps_on_the_zoo_resnet_and_unet():
    from ganzip.models import create

    resnet = create("resnet_9blocks", ngf=4)
    names = [n for n, _ in candidate_layers(resnet, EXAMPLE)]
    # after each downsampling (conv, norm, relu), the nine residual blocks, after each upsampling
    assert names == ["model.6", "model.9"] + [f"model.{i}" for i in range(10, 19)] + ["model.21", "model.24"]
    assert len(auto_layers(resnet, EXAMPLE)) == 8
    unet = create("unet_128", ngf=2)
    picked = [n for n, r in candidate_layers(unet, torch.zeros(1, 3, 128, 128)) if r == "block"]
    # every U-Net level but the outermost (which returns its output without a skip) is a block
    assert picked[-1] == "model.model.1" and len(picked) == 6


def test_spread_keeps_the_first_and_last_and_at_most_k():
    assert spread(list(range(13)), 8) == [0, 2, 3, 5, 7, 9, 10, 12]
    assert spread([1, 2, 3], 8) == [1, 2, 3]
    assert spread(list(range(5)), 1) == [4]


def test_a_name_in_neither_model_lists_the_nearest_names():
    teacher = SkipNet()
    with pytest.raises(GanzipError, match=r"no module 'blocks\.3' in the teacher or the student; nearest: blocks"):
        resolve_taps(teacher, SkipNet(), ["blocks.3"], EXAMPLE)


class Flat(nn.Module):
    def forward(self, x):
        return x.flatten(2)


class WithFlat(SkipNet):
    def __init__(self):
        super().__init__()
        self.flat = Flat()

    def forward(self, x):
        self.flat(x)
        return super().forward(x)


def test_a_layer_whose_output_is_not_4d_is_refused_with_4d_neighbours():
    with pytest.raises(GanzipError, match=r"'flat' outputs a 3-D tensor \(1x3x1024\).*need 4-D.*nearest 4-D layers"):
        resolve_taps(WithFlat(), WithFlat(), ["flat"], EXAMPLE)


def test_spatial_sizes_that_differ_between_teacher_and_student_are_refused():
    with pytest.raises(GanzipError, match=r"'blocks\.0' is 16x16 in the teacher but 32x32 in the student.*agree: "):
        resolve_taps(SkipNet(down_stride=2), SkipNet(down_stride=1), ["blocks.0"], EXAMPLE)


def test_a_module_missing_from_the_student_or_run_twice_is_refused():
    teacher = WithFlat()
    with pytest.raises(GanzipError, match=r"'flat' is not a module of the student"):
        resolve_taps(teacher, SkipNet(), ["flat"], EXAMPLE)
    with pytest.raises(GanzipError, match=r'"auto" stands alone'):
        resolve_taps(teacher, teacher, ["auto", "blocks.0"], EXAMPLE)


class Twice(SkipNet):
    def forward(self, x):
        self.stem(x)
        return super().forward(x)


def test_a_module_run_twice_per_forward_is_ambiguous():
    with pytest.raises(GanzipError, match=r"'stem' runs 2 times per forward"):
        resolve_taps(Twice(), Twice(), ["stem"], EXAMPLE)


class Noise(nn.Module):
    """Draws from the global RNG in every forward, eval mode included (like StyleGAN's noise inputs)."""

    def forward(self, x):
        return x + 0.0 * torch.randn_like(x)


def test_choosing_taps_leaves_rng_batchnorm_statistics_and_training_flags_as_they_were():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.5), Noise(), nn.ReLU())
    net.train()
    x = torch.randn(1, 3, 16, 16)
    before_rng = torch.get_rng_state()
    before_stats = net[1].running_mean.clone()
    resolve_taps(net, net, ["1"], x)
    assert torch.equal(torch.get_rng_state(), before_rng)
    assert torch.equal(net[1].running_mean, before_stats) and int(net[1].num_batches_tracked) == 0
    assert all(m.training for m in net.modules())


def test_hooks_are_registered_once_record_only_when_asked_and_come_off():
    teacher, student = SkipNet(), SkipNet(c=8)
    taps = FeatureTaps(teacher, student, resolve_taps(teacher, student, ["blocks.0", "up.2"], EXAMPLE))
    assert not any(m._forward_hooks for m in teacher.modules())  # nothing until attached
    taps.attach().attach()
    assert len(teacher.blocks[0]._forward_hooks) == 1 and len(student.up[2]._forward_hooks) == 1
    x = torch.randn(2, 3, 32, 32)
    student(x), teacher(x)
    assert taps.pairs() is None  # outside recording nothing is kept (eval, export)
    with taps.recording():
        s_out = student(x)
        with torch.no_grad():
            teacher(x)
    pairs = taps.pairs()
    assert list(pairs) == ["blocks.0", "up.2"]
    s_feat, t_feat = pairs["blocks.0"]
    assert s_feat.shape == (2, 16, 16, 16) and t_feat.shape == (2, 32, 16, 16)
    assert s_feat.requires_grad and not t_feat.requires_grad
    with taps.recording():
        student(x)
    assert taps.pairs() is None  # each step starts empty: no teacher forward this time
    taps.remove()
    assert not any(m._forward_hooks for m in list(teacher.modules()) + list(student.modules()))
    assert s_out.shape == x.shape


class InPlaceAfter(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.out = nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1)

    def forward(self, x):
        return self.out(self.act(self.conv(x)))


def test_a_tap_whose_output_is_changed_in_place_later_keeps_the_value_it_had():
    net = InPlaceAfter()
    (tap,) = resolve_taps(net, net, ["conv"], EXAMPLE)
    assert tap.copy
    taps = FeatureTaps(net, net, [tap]).attach()
    x = torch.randn(1, 3, 32, 32)
    with taps.recording():
        net(x)
    s_feat, _ = taps.pairs()["conv"]
    assert torch.equal(s_feat, net.conv(x))  # before the in-place ReLU
    assert (s_feat < 0).any()


def test_taps_under_channels_last_autocast_and_a_data_parallel_wrapper():
    teacher, student = SkipNet(), SkipNet(c=8)
    chosen = resolve_taps(nn.DataParallel(teacher), student, ["auto"], EXAMPLE)
    taps = FeatureTaps(nn.DataParallel(teacher), student, chosen).attach()  # hooks on the wrapped module
    teacher = teacher.to(memory_format=torch.channels_last)
    student = student.to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with taps.recording(), torch.autocast("cpu", dtype=torch.bfloat16):
        student(x)
        with torch.no_grad():
            teacher(x)
    pairs = taps.pairs()
    assert [n for n in pairs] == [t.name for t in chosen]
    assert pairs["down.2"][0].dtype == torch.bfloat16
    taps.remove()

"""build_student / save_student / load_student."""
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

from ganzip import models
from ganzip.errors import GanzipError
from ganzip.loading import load_generator
from ganzip.student import build_student, kept_channels, load_student, save_student
from tests.test_loading import junyanz_state_dict


def test_round_trip_junyanz_checkpoint_to_student_file(tmp_path, tiny_resnet):
    ckpt = tmp_path / "latest_net_G.pth"
    torch.save(junyanz_state_dict(tiny_resnet), ckpt)
    teacher = load_generator(ckpt, arch="resnet_6blocks", arch_opts=["ngf=8"])
    student = build_student(teacher, 0.25, init="inherit")
    path = save_student(student, tmp_path / "student.safetensors")
    rebuilt = load_student(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(student(x), rebuilt(x))
    # load_generator recognises a student file on its own
    assert torch.equal(load_generator(path)(x), rebuilt(x))


def test_channels_scale_uniformly_but_image_channels_stay(tiny_resnet):
    student = build_student(tiny_resnet, 0.5)
    convs = [m for m in student.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    teacher_convs = [m for m in tiny_resnet.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert convs[0].in_channels == 3 and convs[-1].out_channels == 3
    for s, t in zip(convs[:-1], teacher_convs[:-1]):
        assert s.out_channels == t.out_channels // 2


def test_round_to_keeps_multiples():
    teacher = models.create("resnet_6blocks", ngf=16)
    student = build_student(teacher, 0.3, round_to=4)
    outs = [m.out_channels for m in student.modules() if isinstance(m, nn.Conv2d)][:-1]
    assert all(c % 4 == 0 for c in outs)
    assert outs[0] == kept_channels(16, 0.3, 4) == 4


def test_inherit_keeps_the_largest_teacher_channels(tiny_resnet):
    """The kept channels are the top-k by L2 magnitude over each channel's group.

    That is torch-pruning's ``MagnitudeImportance(p=2)``, which ganzip uses: a
    channel of the first conv is ranked by its filter together with the next
    conv's input slice that reads it (computed here directly from the weights).
    """
    student = build_student(tiny_resnet, 0.5, init="inherit")
    t1, t2 = tiny_resnet.model[1].weight, tiny_resnet.model[4].weight
    s1, s2 = student.model[1].weight, student.model[4].weight
    # every kept filter is one of the teacher's filters, with its bias
    kept = [next(i for i, t in enumerate(t1) if torch.equal(row, t)) for row in s1]
    assert torch.equal(student.model[1].bias, tiny_resnet.model[1].bias[kept])
    importance = t1.flatten(1).pow(2).sum(1) + t2.transpose(0, 1).flatten(1).pow(2).sum(1)
    assert sorted(kept) == sorted(importance.topk(s1.shape[0]).indices.tolist())
    assert sorted(kept) != sorted(t1.flatten(1).norm(dim=1).topk(s1.shape[0]).indices.tolist())  # the group matters here
    # the next conv reads exactly those channels
    reads = t2[:, kept]
    for row in s2:
        assert any(torch.equal(row, t) for t in reads)


def test_scratch_reinitialises_like_cyclegan(tiny_resnet):
    teacher = models.create("resnet_9blocks", ngf=32)
    student = build_student(teacher, 0.5, init="scratch", seed=1)
    w = torch.cat([m.weight.flatten() for m in student.modules() if isinstance(m, nn.Conv2d)])
    assert abs(w.std().item() - 0.02) < 0.002
    assert all(m.bias.abs().max() == 0 for m in student.modules() if isinstance(m, nn.Conv2d) and m.bias is not None)


def test_teacher_is_not_modified(tiny_resnet):
    before = {k: v.clone() for k, v in tiny_resnet.state_dict().items()}
    build_student(tiny_resnet, 0.25)
    after = tiny_resnet.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_handles_unet_skips_batchnorm_dropout_and_depthwise():
    for name, opts in [("unet_128", dict(ngf=8, norm="batch", use_dropout=True)),
                       ("unet_128", dict(ngf=8, norm="instance")),
                       ("mobile_resnet_9blocks", dict(ngf=8))]:
        teacher = models.create(name, **opts).eval()
        size = getattr(teacher, "min_size", 64)
        student = build_student(teacher, 0.5, size=size)
        assert student(torch.randn(1, 3, size, size)).shape == (1, 3, size, size)


class OwnGenerator(nn.Module):
    """A generator class that ganzip does not know: residual add + transposed conv."""

    def __init__(self, ch=16):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, ch, 3, padding=1), nn.InstanceNorm2d(ch, affine=True), nn.ReLU(),
                                 nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1), nn.ReLU())
        self.res = nn.Sequential(nn.Conv2d(ch * 2, ch * 2, 3, padding=1), nn.BatchNorm2d(ch * 2), nn.ReLU())
        self.dec = nn.Sequential(nn.ConvTranspose2d(ch * 2, ch, 4, stride=2, padding=1), nn.ReLU(),
                                 nn.Conv2d(ch, 3, 3, padding=1), nn.Tanh())

    def forward(self, x):
        h = self.enc(x)
        return self.dec(h + self.res(h))


def test_a_users_own_class_compresses_to_quarter_width(tmp_path):
    teacher = OwnGenerator(16).eval()
    student = build_student(teacher, 0.25)
    assert student.enc[0].out_channels == 4 and student.res[0].out_channels == 8
    y = student(torch.randn(1, 3, 32, 32))
    assert y.shape == (1, 3, 32, 32)


def test_user_class_student_reload_needs_the_arch_named(tmp_path, monkeypatch):
    (tmp_path / "owngen.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        class Gen(nn.Module):
            def __init__(self, ch=16):
                super().__init__()
                self.a = nn.Conv2d(3, ch, 3, padding=1)
                self.b = nn.Conv2d(ch, 3, 3, padding=1)
            def forward(self, x):
                return self.b(self.a(x).relu()).tanh()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    teacher = load_generator(None, arch="owngen:Gen", arch_opts=["ch=16"])
    path = save_student(build_student(teacher, 0.25), tmp_path / "s.safetensors")
    with pytest.raises(GanzipError, match="arch='owngen:Gen'"):
        load_student(path)
    assert load_student(path, arch="owngen:Gen").a.out_channels == 4


@pytest.mark.parametrize("width", [0, -0.5, 1.5, float("nan")])
def test_impossible_widths_are_refused(tiny_resnet, width):
    with pytest.raises(GanzipError, match="width"):
        build_student(tiny_resnet, width)


def test_layers_a_width_would_empty_stay_at_full_width_and_are_reported():
    teacher = models.create("resnet_6blocks", ngf=4)  # 4-, 8- and 16-channel layers
    student = build_student(teacher, 0.1)
    convs = {n: m for n, m in student.named_modules() if isinstance(m, nn.Conv2d)}
    assert convs["model.1"].out_channels == 4  # floor(0.4) = 0: left whole
    assert any(m.out_channels == 1 for m in convs.values())  # the 16-channel groups keep floor(1.6) = 1
    left = {u["layer"]: u["reason"] for u in student.ganzip_student["unpruned"]}
    assert "would leave with none" in left["model.1"]
    assert student(torch.randn(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_a_model_with_nothing_to_prune_is_refused_in_one_line():
    teacher = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1))
    with pytest.raises(GanzipError, match="nothing in this model can be pruned") as err:
        build_student(teacher, 0.5)
    assert "image's 3 channels" in str(err.value) and "\n" not in str(err.value)


def test_width_one_is_a_copy(tiny_resnet):
    student = build_student(tiny_resnet, 1.0, init="inherit")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(student(x), tiny_resnet(x))


def test_running_a_student_does_not_need_torch_pruning(tmp_path, tiny_resnet):
    path = save_student(build_student(tiny_resnet, 0.25), tmp_path / "s.safetensors")
    code = textwrap.dedent(f"""
        import sys, torch
        sys.modules["torch_pruning"] = None   # any import of it now fails
        from ganzip.student import load_student
        s = load_student({str(path)!r})
        print(tuple(s(torch.zeros(1, 3, 32, 32)).shape))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "(1, 3, 32, 32)" in out.stdout

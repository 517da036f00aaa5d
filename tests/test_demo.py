"""`ganzip demo` end to end with a tiny budget: the shipped teacher, crd and the baselines, the report.

No pretrained files exist here, so the demo must run without VGG-16,
Inception and AlexNet and say so in its report. The budget is a few steps on
a few rendered images: this checks the plumbing and the report's contents,
not the quality (docs/demo.md has the full-budget numbers).
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from ganzip import assets, demo
from ganzip.errors import AssetMissingError, GanzipError
from ganzip.imaging import LABEL_BAND
from ganzip.student import load_student



def _missing(name: str) -> bool:
    try:
        assets.resolve(name, offline=True)
        return False
    except AssetMissingError:
        return True


# crd, (crd-plain without VGG-16), scratch, kd-pixel, rkd-instance
RECIPES = [spec.label for spec in demo.demo_specs(compare=True, perceptual=not _missing("vgg16"))]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    # batch 3: rkd-instance relates the images of a batch (angles need three)
    return demo.run_demo(out, compare=True, steps=2, batch_size=3, n_train=12, eval_images=8, quiet=True,
                         latency=False)


@pytest.fixture(scope="module")
def report_json(result):
    return json.loads((result.out / "report.json").read_text())


def test_report_files_are_written(result):
    for name in ("report.json", "report.md", "report.html", "samples.png"):
        assert (result.out / name).is_file(), name
    for recipe in RECIPES:
        for name in ("student.safetensors", "report.json", "report.md", "report.html", "train_log.csv"):
            assert (result.out / recipe / name).is_file(), (recipe, name)


def test_comparison_has_the_teacher_and_every_recipe(report_json):
    rows = report_json["comparison"]["rows"]
    assert [r[0] for r in rows] == ["teacher"] + RECIPES


def test_fidelity_numbers_are_present_and_finite(report_json):
    header = report_json["comparison"]["header"]
    for row in report_json["comparison"]["rows"][1:]:
        cells = dict(zip(header, row))
        for key in ("PSNR to teacher (dB)", "SSIM to teacher", "PSNR to ground truth (dB)", "MACs", "params"):
            assert isinstance(cells[key], (int, float)) and math.isfinite(cells[key]), (row[0], key)
        assert -1.0 <= cells["SSIM to teacher"] <= 1.0


def test_teacher_and_student_cost_are_reported(report_json):
    cost = report_json["cost"]
    t, s = cost["teacher"], cost["student"]
    assert s["macs"] < t["macs"] / 8 and s["params"] < t["params"] / 8  # width 0.25: about 1/16


def test_teacher_cost_is_the_shipped_teacher(report_json):
    from ganzip.metrics.cost import count_params

    assert report_json["cost"]["teacher"]["params"] == count_params(demo.load_demo_teacher())


def test_students_are_width_quarter_files_that_load(result):
    for run in result.runs:
        student = load_student(run.student_path)
        assert student.ganzip_student["width"] == 0.25


def test_missing_pretrained_files_are_listed_with_what_was_used_instead(report_json):
    listed = {u["asset"]: u for u in report_json["unavailable"]}
    for name in ("vgg16", "inception_fid", "alexnet"):
        if _missing(name):
            assert name in listed, name
            assert listed[name]["why"] and listed[name]["instead"]
        else:  # present: not listed, and nothing replaced
            assert name not in listed, name
    assert ("perceptual.weight=0" in report_json["settings"]["overrides"]) == _missing("vgg16")
    assert any("vgg16" in w for w in report_json["warnings"]) == _missing("vgg16")


@pytest.mark.skipif(not _missing("vgg16"), reason="VGG-16 weights are installed: the crd student uses them")
def test_without_vgg_the_crd_student_gets_a_recorded_pixel_anchor_and_crd_plain_does_not(report_json):
    students = report_json["students"]
    assert students["crd"]["loss_terms"]["student"]["kd_pixel"] == demo.ANCHOR_WEIGHT
    assert "kd_pixel" not in students["crd-plain"]["loss_terms"]["student"]
    assert "perceptual" not in students["crd"]["loss_terms"]["student"]
    vgg = next(u for u in report_json["unavailable"] if u["asset"] == "vgg16")
    assert f"kd_pixel.weight={demo.ANCHOR_WEIGHT:g}" in vgg["instead"]


def test_crd_alone_leaves_the_colours_free():
    """Why the anchor: a colour rotation + scale + shift of the teacher's output has CRD loss 0 but is far from it."""
    from ganzip.losses import CRDLoss

    torch.manual_seed(0)
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    q, _ = torch.linalg.qr(torch.randn(3, 3))
    z = 0.5 * torch.einsum("ij,njhw->nihw", q, y) + torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1)
    assert CRDLoss(patch_size=8)(z, y).item() < 1e-8
    assert (z - y).abs().mean().item() > 0.2


def test_fid_and_lpips_are_absent_not_invented_when_their_weights_are_missing(report_json):
    header = report_json["comparison"]["header"]
    for row in report_json["comparison"]["rows"]:
        cells = dict(zip(header, row))
        # FID is measured for every row (the teacher too); LPIPS to the teacher only for students
        assert (cells["FID"] is None) == _missing("inception_fid"), row[0]
        if row[0] != "teacher":
            assert (cells["LPIPS to teacher"] is None) == _missing("alexnet"), row[0]


def test_the_report_names_the_selection_metric_and_says_when_it_fell_back(report_json):
    for label, student in report_json["students"].items():
        assert any(f"held-out {m} to the teacher" in student["selection"] for m in ("KID", "LPIPS", "PSNR")), label
        if _missing("inception_fid") and _missing("alexnet"):
            assert "held-out PSNR" in student["selection"] and "fell back" in student["selection"], label


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_seeds") / "out"
    specs = [demo.DemoSpec("crd", "crd", (f"kd_pixel.weight={demo.ANCHOR_WEIGHT:g}",)), demo.DemoSpec("kd-pixel", "kd-pixel")]
    res = demo.run_demo(out, specs=specs, steps=2, batch_size=2, n_train=12, eval_images=6, quiet=True,
                        latency=False, seeds=3)
    return res, json.loads((out / "report.json").read_text())


def test_seeds_train_every_student_once_per_seed(seeded):
    res, report = seeded
    assert sorted(r.out.name for r in res.runs) == sorted(f"{l}@s{s}" for l in ("crd", "kd-pixel") for s in range(3))
    for r in res.runs:  # each folder's report says which seed it ran
        assert json.loads((r.out / "report.json").read_text())["seed"] == r.seed
    assert report["command"].endswith("--seeds 3") or "--seeds 3" in report["command"]


def test_seed_tables_match_the_students_own_reports(seeded):
    import statistics

    from scipy import stats

    res, report = seeded
    psnr = {(r.label, r.seed): json.loads((r.out / "report.json").read_text())["metrics"]["student"]
            ["psnr_to_teacher"]["mean"] for r in res.runs}
    crd, kd = [psnr[("crd", s)] for s in range(3)], [psnr[("kd-pixel", s)] for s in range(3)]
    entry = report["over_seeds"]["students"]["crd"]["psnr_to_teacher"]
    assert entry["mean"] == pytest.approx(statistics.mean(crd)) and entry["std"] == pytest.approx(statistics.stdev(crd))
    (pair,) = [p for p in report["paired"] if p["b"] == "kd-pixel" and p["metric"] == "psnr_to_teacher"]
    diffs = [a - b for a, b in zip(crd, kd)]
    assert pair["diff"]["mean"] == pytest.approx(statistics.mean(diffs))
    assert pair["diff"]["std"] == pytest.approx(statistics.stdev(diffs))
    ref = stats.ttest_rel(crd, kd)
    assert pair["t"] == pytest.approx(ref.statistic) and pair["p"] == pytest.approx(ref.pvalue)
    exceeds = abs(statistics.mean(diffs)) > max(statistics.stdev(crd), statistics.stdev(kd))
    assert pair["exceeds_spread"] is exceeds
    md = (res.out / "report.md").read_text()
    assert "Mean ± std over 3 seeds" in md and "paired over seeds" in md


def test_seeds_must_be_a_positive_whole_number(tmp_path):
    with pytest.raises(GanzipError, match="seeds must be"):
        demo.run_demo(tmp_path / "o", seeds=0)


def test_markdown_and_html_show_the_comparison_and_the_samples(result):
    md = (result.out / "report.md").read_text()
    html = (result.out / "report.html").read_text()
    assert "Students side by side" in md and "Students side by side" in html
    for recipe in RECIPES:
        assert f"| {recipe} |" in md
        assert f"{recipe}/images/00_student.png" in html
    assert "Unavailable pretrained files" in md or not any(_missing(n) for n in ("vgg16", "inception_fid", "alexnet"))


def test_sample_grid_has_a_column_per_model(result, report_json):
    img = Image.open(result.out / "samples.png")
    size = report_json["data"]["size"]
    columns = 3 + len(RECIPES)  # input, ground truth, teacher, students
    assert img.size[0] == columns * size
    band = 2 * LABEL_BAND  # the caption naming the split, then a label over each column
    assert (img.size[1] - band) % size == 0 and img.size[1] >= size + band


def test_timing_is_recorded(report_json):
    timing = report_json["timing"]
    assert timing["wall_seconds"] > 0 and timing["cpu_seconds"] > 0
    assert set(timing["per_student_training_seconds"]) == set(RECIPES)


def test_cli_runs_the_demo_with_a_tiny_budget(cli, tmp_path):
    res = cli("demo", "--out", tmp_path / "d", "--steps", "1", "--batch-size", "2", "--eval-images", "4", "--quiet")
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    assert "crd" in res.stdout and "report:" in res.stdout
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    assert [r[0] for r in report["comparison"]["rows"]] == ["teacher", "crd"]


def test_cli_refuses_a_folder_it_did_not_write(cli, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    cli("demo", "--out", tmp_path, "--steps", "1").assert_user_error("did not write")

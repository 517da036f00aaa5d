"""Reports read at a glance (issue 18 §3): headline, command, ↑/↓ and 2 decimals, splits, short warnings,
loss values, labelled grids and readable curves."""
from __future__ import annotations

import re

import numpy as np
import torch
from PIL import Image

from ganzip import imaging
from ganzip import report as rep
from ganzip import report_html, report_tables

FID_WARNING = ("FID and KID not computed: pt_inception-2015-12-05-6726825d.pth (Inception-v3 FID weights (TensorFlow "
               "2015-12-05 graph ported by pytorch-fid)) was not found. Looked in: /root/.cache/ganzip/assets/x.pth; "
               "/root/.cache/torch/hub/checkpoints/x.pth. Offline, so no download. Fix: get the file from https://"
               "github.com/mseitzer/pytorch-fid/releases/... then run `ganzip assets import x.pth`")


def _log(tmp_path):
    log = tmp_path / "train_log.csv"
    log.write_text("step,epoch,lr,loss,crd,adversarial,holdout_psnr\n"
                   "1,0,0.0002,4.0,3.0,1.0,\n2,0,0.0002,3.0,2.0,1.0,\n3,1,0.0001,2.0,1.5,0.5,\n"
                   "4,1,0.0001,1.0,0.5,0.5,17.25\n")
    return log


def _report(tmp_path, **extra):
    sections = {
        "data": {"source": "builtin:edges2shapes", "split": "test", "images": 3},
        "models": {"teacher": {"source": "/models/G.pth", "arch": "resnet_6blocks", "channels": {"first_layer": 16}},
                   "student": {"source": "s.safetensors", "arch": "resnet_6blocks", "opts": {"ngf": 16},
                               "student": {"width": 0.25}, "channels": {"first_layer": 4}}},
        "cost": {"size": 64, "device": "cpu",
                 "teacher": {"macs": 56_800_000_000, "params": 11_378_179, "latency_ms": 950.0},
                 "student": {"macs": 4_000_000_000, "params": 800_000, "latency_ms": 96.0}},
        "metrics": {"split": "test", "count": 3, "teacher": {"fid": 60.0, "psnr_to_target": {"mean": 17.7012, "std": 1.0}},
                    "student": {"fid": 62.5, "delta_fid": 2.5, "psnr_to_teacher": {"mean": 24.6391, "std": 0.51234},
                                "ssim_to_teacher": {"mean": 0.91234, "std": 0.01},
                                "lpips_to_teacher": {"mean": 0.1234, "std": 0.01},
                                "sharpness_to_teacher": {"mean": 0.9312, "std": 0.05}}},
        "assets": [{"name": "inception_fid", "path": None, "sha256": None, "verified": None, "unavailable": "missing"}],
        "warnings": [FID_WARNING],
        "paths": {"train_log": str(_log(tmp_path))},
    }
    return rep.compose("compress", sections, command="ganzip compress G.pth --width 0.25", extra={
        "losses_active": {"crd": 25.0, "adversarial": 1.0},
        "training": {"steps": 4, "best_step": 4, "best_holdout": {"holdout_psnr": 17.25},
                     "last_holdout": {"holdout_psnr": 17.25}}, **extra})


def test_the_headline_states_the_cost_ratios_fidelity_and_fid_computed_independently(tmp_path):
    macs, faster, psnr = 56.8e9 / 4e9, 950.0 / 96.0, 24.6391
    expected = (f"{macs:.1f}× fewer MACs, {faster:.1f}× faster on this CPU, {psnr:.1f} dB to the teacher, "
                f"FID 62.5 (teacher 60.0) (test split, 3 images)")
    assert _report(tmp_path)["headline"] == expected == ("14.2× fewer MACs, 9.9× faster on this CPU, 24.6 dB to "
                                                         "the teacher, FID 62.5 (teacher 60.0) (test split, 3 images)")


def test_without_fid_the_headline_says_it_was_not_measured(tmp_path):
    report = _report(tmp_path)
    for who in ("teacher", "student"):
        report["metrics"][who].pop("fid")
    assert report_tables.headline(report).endswith("24.6 dB to the teacher, FID not measured (test split, 3 images)")


def test_every_metric_has_a_direction_marker_and_two_decimals(tmp_path):
    report = _report(tmp_path)
    rows = report_tables.metric_rows(report)
    assert rows and all(r[0].endswith((" ↑", " ↓", " →1")) for r in rows)
    assert [r[0] for r in rows if r[0].endswith("→1")] == ["sharpness vs teacher →1"]  # best at 1: blur below, noise above
    assert [r[0] for r in rows if r[0].startswith(("PSNR", "SSIM"))] and all(
        r[0].endswith("↑") for r in rows if r[0].startswith(("PSNR", "SSIM")))
    assert all(r[0].endswith("↓") for r in rows if r[0].startswith(("FID", "LPIPS", "ΔFID")))
    numbers = [n for r in rows for c in r[1:] for n in re.findall(r"[-+]?\d+\.\d+", c)]
    assert numbers and all(len(n.split(".")[1]) == 2 for n in numbers), numbers
    assert ["PSNR to teacher (dB) ↑", "—", "24.64 ± 0.51"] in rows
    assert all(h.endswith("↓") for h in report_tables.TABLE1_HEADER[1:])


def test_metrics_name_their_split_and_the_holdout_is_labelled_as_training_images(tmp_path):
    md = rep.render_markdown(_report(tmp_path), images=[{"input": "images/00_input.png"}])
    assert "| Metric (test split, 3 images) | Teacher | Student |" in md
    assert "## Samples (test split, 3 images)" in md
    assert "| Metric (held-out training images) | kept student (step 4) | last step (4) |" in md
    assert "FID and LPIPS on the test split, 3 images." in md


def test_the_command_is_recorded_from_argv_when_ganzip_runs_it(monkeypatch):
    monkeypatch.setattr("sys.argv", ["/venv/bin/ganzip", "compress", "G.pth", "--out", "my out"])
    assert rep.compose("compress", {})["command"] == "ganzip compress G.pth --out 'my out'"
    monkeypatch.setattr("sys.argv", ["/usr/lib/python3/pytest", "-q"])
    assert "command" not in rep.compose("eval", {})


def test_warnings_are_one_line_and_point_to_ganzip_assets(tmp_path):
    short = report_tables.one_line(FID_WARNING)
    assert short == "FID and KID not computed: pt_inception-2015-12-05-6726825d.pth was not found; see `ganzip assets`"
    page = rep.render_html(_report(tmp_path))
    assert f"<li>{short.replace('`', '`')}</li>" in page and "Looked in" not in page


def test_no_none_rows_and_the_student_shows_its_real_channels(tmp_path):
    md = rep.render_markdown(_report(tmp_path))
    assert "None" not in md
    assert "| student.channels.first_layer | 4 |" in md and "| student.opts.ngf |" not in md
    assert "| student.built_from_teacher_opts.ngf | 16 |" in md
    assert "| teacher.source | /models/G.pth |" in md


def test_the_losses_table_shows_final_and_mean_values_from_the_log(tmp_path):
    crd = [3.0, 2.0, 1.5, 0.5]
    rows = report_tables.loss_rows(_report(tmp_path))
    assert ["crd", "25.00", f"{crd[-1]:.2f}", f"{sum(crd) / len(crd):.2f}"] in rows
    assert ["loss", "total", "1.00", "2.50"] in rows
    assert not any(r[0] in ("epoch", "lr", "holdout_psnr") for r in rows)


def test_curves_plot_losses_then_lr_then_the_holdout_on_one_step_axis(tmp_path):
    panels = report_html.curve_panels(rep.read_train_log(_log(tmp_path)))
    titles = [t for t, _ in panels]
    assert titles == ["total loss", "crd loss", "adversarial loss", "learning rate",
                      "psnr (held-out training images)"]
    lr_svg = dict(panels)["learning rate"]
    assert ">0.0002<" in lr_svg and ">0.0001<" in lr_svg and "e-04" not in lr_svg
    holdout = dict(panels)["psnr (held-out training images)"]
    assert "<circle" in holdout and ">step 1<" in holdout and ">4<" in holdout


def test_the_sample_grid_png_has_a_caption_and_column_labels_over_its_tiles():
    x = torch.zeros(2, 3, 32, 32)
    png = imaging.sample_grid(x, x + 0.5, x - 0.5, caption="held-out training images")
    img = np.asarray(Image.open(__import__("io").BytesIO(png)).convert("RGB"))
    assert img.shape == (2 * 32 + 28, 3 * 32, 3)
    band = img[:28]
    assert (band < 128).any(), "the caption and labels are drawn"
    for col in range(3):  # every column has a label in the band just above the tiles
        assert (band[14:, col * 32:(col + 1) * 32] < 128).any()
    assert (img[28:] != 255).all(axis=-1).any()


def test_grid_columns_in_the_html_follow_the_png_order():
    rows = [{"input": "a", "target": "b", "teacher": "c", "crd": "d", "scratch": "e"}]
    assert report_tables._image_columns(rows) == ["input", "target", "teacher", "crd", "scratch"]

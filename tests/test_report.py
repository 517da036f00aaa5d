"""ganzip.report: report.json/.md/.html from whatever subset of the report keys is present."""
from __future__ import annotations

import json
import math

import numpy as np

from ganzip import report as rep


def _full_report(tmp_path):
    log = tmp_path / "train_log.csv"
    log.write_text("step,crd,adv\n0,2.0,1.0\n10,1.5,0.9\n20,1.0,nan\n30,0.5,0.7\n")
    return {
        "command": "ganzip compress G.pth --width 0.25",
        "seed": 0,
        "recipe": {"losses": {"crd": {"weight": 25.0}, "perceptual": {"weight": 1.0}}, "lr": 2e-4},
        "models": {"teacher": {"arch": "resnet_9blocks"}, "student": {"arch": "resnet_9blocks"}},
        "cost": {"size": 256, "device": "cpu",
                 "teacher": {"macs": 56_800_000_000, "params": 11_378_179, "latency_ms": 950.0},
                 "student": {"macs": 4_000_000_000, "params": 800_000, "latency_ms": 96.0}},
        "metrics": {"teacher": {"fid": 60.0},
                    "student": {"fid": 62.5, "delta_fid": 2.5,
                                "lpips_to_teacher": {"mean": 0.1234, "std": 0.01, "count": 3}}},
        "losses_active": ["crd", "perceptual", "adversarial"],
        "training": {"steps": 30, "best_step": 20, "final_losses": {"crd": 0.5}},
        "assets": [{"name": "vgg16", "path": "/x/vgg16.pth", "sha256": "ab" * 32, "verified": False}],
        "warnings": ["<script>alert(1)</script> is not escaped?"],
        "versions": rep.environment_info("cpu"),
        "paths": {"train_log": str(log)},
    }


def test_writes_three_files_with_schema_version_first(tmp_path):
    paths = rep.write_reports(tmp_path / "out", _full_report(tmp_path))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.json", "report.md"]
    data = json.loads(paths["json"].read_text())
    assert list(data)[0] == "schema_version" and data["schema_version"] == 1


def test_table1_shows_ratios_fid_delta_lpips_and_latency(tmp_path):
    rows = rep.table1_rows(_full_report(tmp_path))
    assert rows[0] == ["Teacher (resnet_9blocks)", "56.80G", "11.378M", "60.00", "—", "—", "950.0 ms"]
    assert rows[1] == ["Student (resnet_9blocks)", "4.00G (14.2×)", "0.800M (14.2×)", "62.50", "+2.50", "0.12",
                       "96.0 ms"]


def test_markdown_has_the_table_and_the_sections_present(tmp_path):
    md = rep.render_markdown(_full_report(tmp_path))
    assert "| Student (resnet_9blocks) | 4.00G (14.2×) |" in md
    for heading in ("## Warnings", "## Training", "## Recipe", "## Pretrained files", "## Environment"):
        assert heading in md
    assert "UNVERIFIED" in md
    assert "| losses.crd.weight | 25 |" in md


def test_html_escapes_text_and_draws_loss_curves_from_the_training_log(tmp_path):
    paths = rep.write_reports(tmp_path / "out", _full_report(tmp_path))
    page = paths["html"].read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("<svg") == 2  # one chart per loss term: crd, adv
    assert "<polyline" in page
    assert "<table>" in page and "14.2×" in page


def test_a_report_with_only_some_keys_renders(tmp_path):
    paths = rep.write_reports(tmp_path, {"warnings": ["only this"]})
    assert "only this" in paths["md"].read_text() and "only this" in paths["html"].read_text()
    assert "Cost and quality" not in paths["html"].read_text()
    assert json.loads(paths["json"].read_text()) == {"schema_version": 1, "warnings": ["only this"]}


def test_non_finite_and_numpy_values_become_plain_json(tmp_path):
    paths = rep.write_reports(tmp_path, {"metrics": {"student": {"fid": float("inf"), "n": np.int64(3),
                                                                 "v": np.float32(0.5), "a": np.arange(2)}}})
    data = json.loads(paths["json"].read_text())
    assert data["metrics"]["student"] == {"fid": None, "n": 3, "v": 0.5, "a": [0, 1]}


def test_image_rows_link_png_paths_and_embed_arrays(tmp_path):
    img = np.zeros((4, 4, 3), dtype=np.uint8)
    paths = rep.write_reports(tmp_path, {}, images=[{"input": "images/00_input.png", "student": img}])
    page = paths["html"].read_text()
    assert 'src="images/00_input.png"' in page and 'src="data:image/png;base64,' in page
    assert "![input](images/00_input.png)" in paths["md"].read_text()


def test_no_temporary_files_are_left_behind(tmp_path):
    rep.write_reports(tmp_path, _full_report(tmp_path))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_train_log_curves_skip_bad_cells_and_are_thinned(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,a,b\n" + "".join(f"{i},{i * 0.5},{'x' if i % 2 else i}\n" for i in range(1000)))
    curves = rep.read_train_log(log, max_points=100)
    assert len(curves["a"]) <= 101 and curves["a"][0] == (0.0, 0.0) and curves["a"][-1] == (999.0, 499.5)
    assert all(step % 2 == 0 for step, _ in curves["b"])


def test_environment_info_names_the_packages_and_the_device():
    info = rep.environment_info("cpu")
    for key in ("python", "torch", "torchvision", "timm", "torch_pruning", "safetensors", "lpips", "pytorch_fid",
                "numpy", "scipy", "ganzip", "platform", "device"):
        assert key in info
    assert info["device"].startswith("cpu")
    assert info["torch"] is not None


def test_svg_curve_maps_points_inside_the_plot():
    svg = rep.svg_curve([(0, 1.0), (10, 3.0)], "loss", width=320, height=180)
    pts = svg.split('points="')[1].split('"')[0].split()
    xs = [float(p.split(",")[0]) for p in pts]
    ys = [float(p.split(",")[1]) for p in pts]
    assert xs == [48.0, 310.0] and ys[0] > ys[1]  # higher loss is drawn higher
    assert math.isclose(ys[1], 22.0)

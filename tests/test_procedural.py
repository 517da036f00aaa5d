"""Built-in procedural tasks: determinism, structure, writing to disk and reading back."""
from __future__ import annotations

import json

import pytest
import torch

from ganzip.data import TASKS, ProceduralDataset, generate, make_dataset, open_dataset, open_target, resolve_layout
from ganzip.errors import GanzipError

PAIRED = [n for n, t in TASKS.items() if t.kind == "paired"]
UNPAIRED = [n for n, t in TASKS.items() if t.kind == "unpaired"]


def test_registry_has_paired_and_unpaired_tasks_with_descriptions():
    assert PAIRED and UNPAIRED
    assert all(t.description for t in TASKS.values())


@pytest.mark.parametrize("name", sorted(TASKS))
def test_same_seed_gives_the_same_images(name):
    a = generate(name, [0, 3], size=64, seed=5)
    b = generate(name, [0, 3], size=64, seed=5)
    assert torch.equal(a["A"], b["A"]) and torch.equal(a["B"], b["B"])


@pytest.mark.parametrize("name", sorted(TASKS))
def test_different_seeds_give_different_images(name):
    a = generate(name, [0], size=64, seed=0)
    b = generate(name, [0], size=64, seed=1)
    assert not torch.equal(a["A"], b["A"]) and not torch.equal(a["B"], b["B"])


def test_splits_hold_different_images():
    train = generate("labels2shapes", [0], size=64, split="train")
    test = generate("labels2shapes", [0], size=64, split="test")
    assert not torch.equal(train["B"], test["B"])


@pytest.mark.parametrize("name", sorted(TASKS))
def test_an_image_is_the_same_alone_or_in_a_batch(name):
    batch = generate(name, list(range(5)), size=64, seed=2)
    alone = generate(name, [3], size=64, seed=2)
    assert torch.equal(batch["A"][3], alone["A"][0]) and torch.equal(batch["B"][3], alone["B"][0])


def test_images_have_the_requested_size_and_range():
    ds = ProceduralDataset("day2night", n=3, size=96, seed=0)
    item = ds[2]
    assert item["A"].shape == (3, 96, 96) and item["B"].shape == (3, 96, 96)
    assert item["A"].min() >= -1 and item["A"].max() <= 1
    assert item["path"] == "builtin:day2night/train/00002"


@pytest.mark.parametrize("size", [32, 63, 257, 512])
def test_sizes_outside_64_to_256_are_rejected(size):
    with pytest.raises(GanzipError, match="64 to 256"):
        ProceduralDataset("labels2shapes", n=1, size=size)


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(GanzipError, match="labels2shapes"):
        open_dataset("builtin:cats2dogs", size=64)


def test_label_maps_use_only_the_palette_colours():
    from ganzip.data.procedural import _LABEL_COLOURS

    labels = generate("labels2shapes", 4, size=64)["A"]
    palette = {tuple(row) for row in (_LABEL_COLOURS * 255).round().int().tolist()}
    seen = {tuple(p) for p in labels.permute(0, 2, 3, 1).reshape(-1, 3).tolist()}
    assert seen <= palette
    assert len(seen) >= 3  # sky, ground and at least one object class


def test_edge_maps_are_black_lines_on_white():
    edges = generate("edges2shapes", 4, size=64)["A"]
    values = set(edges.unique().tolist())
    assert values == {0, 255}
    assert (edges == 0).float().mean() < 0.15  # thin lines, mostly background


def test_paired_target_follows_the_label_map():
    """In a paired task the rendered image is textured where the label map is flat, but aligned with it:
    the sky region of the labels is bluish in the picture, the ground region greenish."""
    out = generate("labels2shapes", 8, size=64)
    labels, photo = out["A"].float(), out["B"].float()
    sky = (labels[:, 0] == 38) & (labels[:, 2] == 217)  # the palette's sky colour
    ground = (labels[:, 0] == 26) & (labels[:, 1] == 153)
    assert sky.any() and ground.any()
    r, g, b = photo[:, 0], photo[:, 1], photo[:, 2]
    assert (b[sky] > r[sky]).float().mean() > 0.95
    assert (g[ground] > b[ground]).float().mean() > 0.95
    assert g[ground].std() > 5  # textured grass, not a flat colour


def test_unpaired_domains_are_not_aligned():
    """A[i] and B[i] of an unpaired task are different scenes: their horizons differ."""
    out = generate("solid2striped", 6, size=64)
    # Both styles share the sky and grass colours, so compare where the sky ends in each column 0.
    def horizon_rows(img):
        green = img[:, 1].float() - img[:, 2].float() > 0  # grass is greener than blue
        return green[:, :, 0].float().argmax(dim=1)

    assert not torch.equal(horizon_rows(out["A"]), horizon_rows(out["B"]))


def test_direction_BtoA_swaps_the_domains():
    ab = ProceduralDataset("edges2shapes", n=2, size=64)[1]
    ba = ProceduralDataset("edges2shapes", n=2, size=64, direction="BtoA")[1]
    assert torch.equal(ab["A"], ba["B"]) and torch.equal(ab["B"], ba["A"])


def test_augment_flips_A_and_B_together():
    plain = ProceduralDataset("labels2shapes", n=16, size=64, seed=0)
    aug = ProceduralDataset("labels2shapes", n=16, size=64, seed=0, augment=True)
    flipped = 0
    for i in range(16):
        p, a = plain[i], aug[i]
        if torch.equal(a["A"], p["A"].flip(-1)) and not torch.equal(a["A"], p["A"]):
            assert torch.equal(a["B"], p["B"].flip(-1))
            flipped += 1
        else:
            assert torch.equal(a["A"], p["A"]) and torch.equal(a["B"], p["B"])
    assert 0 < flipped < 16


def test_dataloader_batches_match_single_items():
    loader = torch.utils.data.DataLoader(ProceduralDataset("day2night", n=6, size=64), batch_size=3)
    batch = next(iter(loader))
    single = ProceduralDataset("day2night", n=6, size=64)[2]
    assert torch.equal(batch["A"][2], single["A"]) and torch.equal(batch["B"][2], single["B"])


def test_open_dataset_builtin_uses_the_procedural_dataset():
    ds = open_dataset("builtin:labels2shapes", split="test", size=64, n=7, augment=False, seed=3)
    assert isinstance(ds, ProceduralDataset) and len(ds) == 7 and ds.kind == "paired"
    assert torch.equal(ds[0]["B"], ProceduralDataset("labels2shapes", 7, 64, 3, "test")[0]["B"])


# --- writing to disk -----------------------------------------------------------------


def test_make_paired_writes_AB_side_by_side_and_reads_back_identically(tmp_path):
    summary = make_dataset("edges2shapes", tmp_path / "e2s", n=4, size=64, seed=1, n_test=2, n_val=1, progress=False)
    root = tmp_path / "e2s"
    assert summary["counts"] == {"train": 4, "val": 1, "test": 2}
    layout = resolve_layout(root)
    assert layout.kind == "paired" and set(layout.splits) == {"train", "val", "test"}
    loaded = open_dataset(root, split="train", size=64, augment=False)
    assert len(loaded) == 4
    built = ProceduralDataset("edges2shapes", n=4, size=64, seed=1)
    for i in range(4):
        assert torch.equal(loaded[i]["A"], built[i]["A"]) and torch.equal(loaded[i]["B"], built[i]["B"])
    assert json.loads((root / "ganzip-data.json").read_text())["task"] == "edges2shapes"


def test_make_unpaired_writes_cyclegan_folders(tmp_path):
    make_dataset("day2night", tmp_path / "d2n", n=3, size=64, n_test=2, progress=False)
    layout = resolve_layout(tmp_path / "d2n")
    assert layout.kind == "unpaired"
    assert sorted(p.name for p in (tmp_path / "d2n").iterdir() if p.is_dir()) == ["testA", "testB", "trainA", "trainB"]
    ds = open_dataset(tmp_path / "d2n", split="test", size=64, augment=False)
    assert len(ds) == 2 and len(open_target(tmp_path / "d2n", split="train", size=64)) == 3
    built = ProceduralDataset("day2night", n=2, size=64, split="test")
    assert torch.equal(ds[1]["A"], built[1]["A"])


def test_make_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(GanzipError, match="not empty"):
        make_dataset("day2night", tmp_path, n=1, size=64, progress=False)


def test_cli_make_and_list(cli, tmp_path):
    res = cli("data", "make", "solid2striped", tmp_path / "s2s", "--n", "2", "--size", "64", "--n-test", "1", "--quiet")
    assert res.exit_code == 0, res.stderr
    assert "wrote 6 PNGs" in res.stdout
    assert len(list((tmp_path / "s2s" / "trainB").glob("*.png"))) == 2
    listed = cli("data", "list")
    assert all(name in listed.stdout for name in TASKS)


def test_cli_make_rejects_bad_size_and_name(cli, tmp_path):
    assert cli("data", "make", "day2night", tmp_path / "x", "--size", "32").exit_code == 2
    cli("data", "make", "nosuch", tmp_path / "y", "--size", "64").assert_user_error("unknown built-in dataset")


def test_help_teaches_with_an_example(cli):
    assert "ganzip data make edges2shapes" in cli("data", "make", "--help").stdout

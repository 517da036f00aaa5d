"""Image folders: layouts, A|B splitting, preprocessing, bad input. Images are made inside each test."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ganzip.data import (
    MIN_SIDE,
    holdout_split,
    image_folder,
    inspect_source,
    open_dataset,
    open_target,
    resolve_layout,
)
from ganzip.errors import GanzipError


def save(path, arr_or_img, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(np.asarray(arr_or_img, dtype=np.uint8))
    img.save(path, **kw)
    return path


def solid(w, h, rgb):
    return np.broadcast_to(np.array(rgb, np.uint8), (h, w, 3)).copy()


def as_uint8(t: torch.Tensor) -> np.ndarray:
    """[3,H,W] in [-1,1] -> HxWx3 uint8 (exact inverse of the loader's scaling)."""
    return ((t + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def random_img(rng, w, h):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# --- layouts -----------------------------------------------------------------


def test_unpaired_layout_finds_train_and_test_domains(tmp_path):
    for d in ("trainA", "trainB", "testA", "testB"):
        save(tmp_path / d / "x.png", solid(16, 16, (0, 0, 0)))
    layout = resolve_layout(tmp_path)
    assert layout.kind == "unpaired"
    assert layout.folder("train") == tmp_path / "trainA"
    assert layout.b_folder("train") == tmp_path / "trainB"
    assert layout.folder("test") == tmp_path / "testA"
    assert layout.eval_split == "test"


def test_paired_layout_finds_train_val_test(tmp_path):
    for d in ("train", "val"):
        save(tmp_path / d / "x.png", solid(32, 16, (0, 0, 0)))
    layout = resolve_layout(tmp_path)
    assert layout.kind == "paired"
    assert set(layout.splits) == {"train", "val"}
    assert layout.eval_split == "val"  # edges2shoes ships train and val only
    with pytest.raises(GanzipError, match="no 'test' split"):
        layout.folder("test")


def test_plain_folder_is_searched_recursively(tmp_path):
    save(tmp_path / "a.png", solid(16, 16, (0, 0, 0)))
    save(tmp_path / "sub" / "deeper" / "b.jpg", solid(16, 16, (0, 0, 0)))
    assert resolve_layout(tmp_path).kind == "plain"
    ds = open_dataset(tmp_path, size=8, augment=False)
    assert len(ds) == 2
    assert ds[1]["path"].endswith("b.jpg")


def test_separate_A_and_B_folders_with_matching_names_are_paired(tmp_path):
    save(tmp_path / "A" / "train" / "1.png", solid(16, 16, (10, 20, 30)))
    save(tmp_path / "B" / "train" / "1.jpg", solid(16, 16, (200, 200, 200)))
    layout = resolve_layout(tmp_path)
    assert layout.kind == "paired" and layout.separate_pairs
    item = open_dataset(tmp_path, size=16, augment=False)[0]
    assert as_uint8(item["A"])[0, 0].tolist() == [10, 20, 30]
    assert item["B_path"].endswith("1.jpg")


def test_separate_A_and_B_folders_with_different_names_are_unpaired(tmp_path):
    save(tmp_path / "A" / "h1.png", solid(16, 16, (0, 0, 0)))
    save(tmp_path / "B" / "z1.png", solid(16, 16, (0, 0, 0)))
    assert resolve_layout(tmp_path).kind == "unpaired"


# --- paired A|B splitting --------------------------------------------------------


def _ab_image(h=8, w=8):
    """Left half: value = 10*column + row (red), right half: 255 - that (red); G, B constant."""
    ab = np.zeros((h, 2 * w, 3), np.uint8)
    for x in range(2 * w):
        for y in range(h):
            v = 10 * (x % w) + y
            ab[y, x] = (v, 50, 100) if x < w else (255 - v, 150, 200)
    return ab


def test_paired_image_is_split_into_left_A_and_right_B(tmp_path):
    ab = _ab_image()
    save(tmp_path / "train" / "0.png", ab)
    item = open_dataset(tmp_path, size=8, augment=False)[0]
    np.testing.assert_array_equal(as_uint8(item["A"]), ab[:, :8])
    np.testing.assert_array_equal(as_uint8(item["B"]), ab[:, 8:])


def test_direction_BtoA_swaps_the_halves(tmp_path):
    ab = _ab_image()
    save(tmp_path / "train" / "0.png", ab)
    item = open_dataset(tmp_path, size=8, augment=False, direction="BtoA")[0]
    np.testing.assert_array_equal(as_uint8(item["A"]), ab[:, 8:])
    np.testing.assert_array_equal(as_uint8(item["B"]), ab[:, :8])


def test_augmented_pair_gets_the_same_crop_and_flip(tmp_path):
    ab = _ab_image(16, 16)
    save(tmp_path / "train" / "0.png", ab)
    # load_size 16 = native size: no resampling, only the crop and the flip.
    ds = open_dataset(tmp_path, size=12, load_size=16, augment=True, seed=3)
    for epoch in range(6):
        ds.set_epoch(epoch)
        item = ds[0]
        a, b = as_uint8(item["A"]).astype(int), as_uint8(item["B"]).astype(int)
        # B was built as 255 - A in the red channel: holds pixel by pixel only if A and B were cut alike.
        np.testing.assert_array_equal(a[..., 0] + b[..., 0], np.full((12, 12), 255))


def test_odd_width_paired_image_is_skipped_with_a_reason(tmp_path):
    save(tmp_path / "train" / "good.png", solid(32, 16, (0, 0, 0)))
    save(tmp_path / "train" / "odd.png", solid(33, 16, (0, 0, 0)))
    ds = open_dataset(tmp_path, size=16, augment=False)
    assert len(ds) == 1 and ds.skipped == 1
    path, reason = ds.skip_reasons[0]
    assert path.endswith("odd.png") and "odd width" in reason


# --- preprocessing ---------------------------------------------------------------


def test_training_transforms_are_deterministic_by_seed(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        save(tmp_path / f"{i}.png", random_img(rng, 40, 30))
    a = open_dataset(tmp_path, size=16, load_size=24, seed=7)
    b = open_dataset(tmp_path, size=16, load_size=24, seed=7)
    for i in (3, 0, 2, 1):  # a different access order must not matter
        assert torch.equal(a[i]["A"], b[i]["A"])
    c = open_dataset(tmp_path, size=16, load_size=24, seed=8)
    assert any(not torch.equal(a[i]["A"], c[i]["A"]) for i in range(4))


def test_item_does_not_depend_on_access_order(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(3):
        save(tmp_path / f"{i}.png", random_img(rng, 20, 20))
    ds = open_dataset(tmp_path, size=12, load_size=20, seed=0)
    first = ds[2]["A"]
    for i in range(3):
        ds[i]
    assert torch.equal(ds[2]["A"], first)


def test_dataloader_workers_give_the_same_items(tmp_path):
    rng = np.random.default_rng(7)
    for i in range(4):
        save(tmp_path / f"{i}.png", random_img(rng, 24, 24))
    ds = open_dataset(tmp_path, size=16, load_size=24, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    batches = torch.cat([b["A"] for b in loader])
    assert torch.equal(batches, torch.stack([ds[i]["A"] for i in range(4)]))


def test_symlink_loop_does_not_hang_the_scan(tmp_path):
    save(tmp_path / "sub" / "a.png", solid(16, 16, (0, 0, 0)))
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert len(open_dataset(tmp_path, size=16)) == 1


def test_indexing_past_the_end_raises_index_error(tmp_path):
    save(tmp_path / "0.png", solid(16, 16, (0, 0, 0)))
    ds = open_dataset(tmp_path, size=16)
    with pytest.raises(IndexError):
        ds[1]
    assert len(list(ds)) == 1  # plain iteration stops


def test_n_keeps_the_first_images(tmp_path):
    for i in range(5):
        save(tmp_path / f"{i}.png", solid(16, 16, (i, i, i)))
    ds = open_dataset(tmp_path, size=16, n=2)
    assert [p.split("/")[-1] for p in ds.paths] == ["0.png", "1.png"]


def test_set_epoch_changes_the_augmentation(tmp_path):
    rng = np.random.default_rng(2)
    save(tmp_path / "0.png", random_img(rng, 32, 32))
    ds = open_dataset(tmp_path, size=16, load_size=32, seed=0)
    draws = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        draws.add(ds[0]["A"].numpy().tobytes())
    assert len(draws) > 1


def test_evaluation_resizes_without_crop_or_flip(tmp_path):
    arr = np.zeros((20, 20, 3), np.uint8)
    arr[:, :10] = 255  # white left half, black right half
    save(tmp_path / "0.png", arr)
    ds = open_dataset(tmp_path, size=20, augment=False)
    for seed in range(3):
        out = as_uint8(open_dataset(tmp_path, size=20, augment=False, seed=seed)[0]["A"])
        np.testing.assert_array_equal(out, arr)
    assert ds[0]["A"].shape == (3, 20, 20)


def test_default_training_load_size_is_286_for_256():
    from ganzip.data.transforms import default_load_size

    assert default_load_size(256, augment=True) == 286
    assert default_load_size(256, augment=False) == 256


def test_scale_width_keeps_aspect_and_crops_to_a_square(tmp_path):
    save(tmp_path / "wide.png", random_img(np.random.default_rng(3), 64, 16))
    ds = open_dataset(tmp_path, size=16, augment=True, preprocess="scale_width_and_crop", load_size=64, seed=0)
    assert ds[0]["A"].shape == (3, 16, 16)


def test_load_size_below_size_is_rejected(tmp_path):
    save(tmp_path / "0.png", solid(16, 16, (0, 0, 0)))
    with pytest.raises(GanzipError, match="load_size"):
        open_dataset(tmp_path, size=16, load_size=8)


# --- colour modes ----------------------------------------------------------------


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: Image.new("L", (16, 16), 77), (77, 77, 77)),
        (lambda: Image.new("1", (16, 16), 1), (255, 255, 255)),
        (lambda: Image.new("CMYK", (16, 16), (0, 0, 0, 0)), (255, 255, 255)),
        (lambda: Image.new("RGBA", (16, 16), (10, 20, 30, 255)), (10, 20, 30)),
        # Fully transparent pixels become the white background, whatever colour they store.
        (lambda: Image.new("RGBA", (16, 16), (10, 20, 30, 0)), (255, 255, 255)),
        (lambda: Image.new("LA", (16, 16), (40, 255)), (40, 40, 40)),
    ],
    ids=["L", "1", "CMYK", "RGBA-opaque", "RGBA-transparent", "LA"],
)
def test_colour_modes_are_converted_to_rgb(tmp_path, make, expected):
    ext = ".tif" if make().mode == "CMYK" else ".png"
    save(tmp_path / f"img{ext}", make())
    item = open_dataset(tmp_path, size=16, augment=False)[0]
    assert item["A"].shape == (3, 16, 16)
    assert as_uint8(item["A"])[5, 5].tolist() == list(expected)


def test_palette_image_is_converted_through_its_palette(tmp_path):
    img = Image.new("P", (16, 16), 1)
    img.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    save(tmp_path / "p.png", img)
    assert as_uint8(open_dataset(tmp_path, size=16, augment=False)[0]["A"])[0, 0].tolist() == [200, 100, 50]


def test_sixteen_bit_greyscale_is_scaled_to_eight_bits(tmp_path):
    arr = np.full((16, 16), 257 * 100, np.uint16)  # 100 in 8-bit terms
    save(tmp_path / "g16.png", Image.fromarray(arr))
    assert as_uint8(open_dataset(tmp_path, size=16, augment=False)[0]["A"])[0, 0].tolist() == [100, 100, 100]


# --- bad input -------------------------------------------------------------------


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(GanzipError, match="does not exist"):
        open_dataset(tmp_path / "nope")


def test_empty_folder_names_the_folder_and_extensions(tmp_path):
    with pytest.raises(GanzipError) as exc:
        open_dataset(tmp_path)
    assert str(tmp_path) in str(exc.value) and ".png" in str(exc.value)


def test_non_image_files_are_skipped_and_counted(tmp_path):
    save(tmp_path / "ok.png", solid(16, 16, (1, 2, 3)))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.jpg").write_bytes(b"this is not a jpeg")
    ds = open_dataset(tmp_path, size=16, augment=False)
    assert len(ds) == 1
    assert ds.skipped == 2
    reasons = dict(ds.skip_reasons)
    assert "not an image file" in reasons[str(tmp_path / "notes.txt")]
    assert "not a readable image" in reasons[str(tmp_path / "fake.jpg")]
    assert "2 files skipped" in ds.skip_summary()


def test_one_pixel_images_are_skipped_and_counted(tmp_path):
    save(tmp_path / "ok.png", solid(16, 16, (0, 0, 0)))
    save(tmp_path / "dot.png", solid(1, 1, (0, 0, 0)))
    ds = open_dataset(tmp_path, size=16, augment=False)
    assert (len(ds), ds.skipped) == (1, 1)
    assert f"{MIN_SIDE} px" in ds.skip_reasons[0][1]


def test_only_tiny_images_is_an_error_naming_the_minimum(tmp_path):
    save(tmp_path / "dot.png", solid(1, 1, (0, 0, 0)))
    save(tmp_path / "thin.png", solid(100, 4, (0, 0, 0)))
    with pytest.raises(GanzipError, match=f"at least {MIN_SIDE} px"):
        open_dataset(tmp_path, size=16)


def test_truncated_image_is_skipped_at_load_time_with_the_next_image_used(tmp_path):
    rng = np.random.default_rng(4)
    save(tmp_path / "a.png", random_img(rng, 16, 16))
    data = save(tmp_path / "b.png", random_img(rng, 16, 16)).read_bytes()
    (tmp_path / "b.png").write_bytes(data[: len(data) // 2])  # header intact, pixels cut off
    save(tmp_path / "c.png", random_img(rng, 16, 16))
    ds = open_dataset(tmp_path, size=16, augment=False)
    assert len(ds) == 3  # the header scan cannot tell
    with pytest.warns(RuntimeWarning, match="b.png"):
        item = ds[1]
    assert item["path"].endswith("c.png")
    assert ds.load_failures[0][0].endswith("b.png")


def test_verify_counts_truncated_images_up_front(tmp_path):
    rng = np.random.default_rng(5)
    save(tmp_path / "a.png", random_img(rng, 16, 16))
    data = save(tmp_path / "b.png", random_img(rng, 16, 16)).read_bytes()
    (tmp_path / "b.png").write_bytes(data[: len(data) // 2])
    ds = open_dataset(tmp_path, size=16, augment=False, verify=True)
    assert (len(ds), ds.skipped) == (1, 1)


def _png_header_only(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_decompression_bomb_is_skipped_not_decoded(tmp_path):
    save(tmp_path / "ok.png", solid(16, 16, (0, 0, 0)))
    (tmp_path / "bomb.png").write_bytes(_png_header_only(30000, 30000))  # 900 MPixel claimed
    ds = open_dataset(tmp_path, size=16, augment=False)
    assert (len(ds), ds.skipped) == (1, 1)
    assert "decompression-bomb" in ds.skip_reasons[0][1]


# --- unpaired, targets, holdout ----------------------------------------------------


def test_unpaired_items_come_from_the_A_and_B_folders(tmp_path):
    for i in range(3):
        save(tmp_path / "trainA" / f"{i}.png", solid(16, 16, (10, 10, 10)))
    for i in range(5):
        save(tmp_path / "trainB" / f"{i}.png", solid(16, 16, (200, 200, 200)))
    ds = open_dataset(tmp_path, size=16, seed=0)
    assert ds.kind == "unpaired" and len(ds) == 3  # one epoch = one pass over the inputs
    item = ds[1]
    assert "trainA" in item["path"] and "trainB" in item["B_path"]
    assert as_uint8(item["A"])[0, 0].tolist() == [10, 10, 10]
    assert as_uint8(item["B"])[0, 0].tolist() == [200, 200, 200]


def test_unpaired_without_B_folder_yields_only_A(tmp_path):
    save(tmp_path / "trainA" / "0.png", solid(16, 16, (0, 0, 0)))
    item = open_dataset(tmp_path, size=16)[0]
    assert set(item) == {"A", "path"}


def test_open_target_gives_every_target_image(tmp_path):
    save(tmp_path / "trainA" / "0.png", solid(16, 16, (0, 0, 0)))
    for i in range(4):
        save(tmp_path / "trainB" / f"{i}.png", solid(16, 16, (5, 5, 5)))
    target = open_target(tmp_path, split="train", size=16)
    assert len(target) == 4
    assert set(target[0]) == {"B", "path"}


def test_image_folder_uses_the_given_key(tmp_path):
    save(tmp_path / "0.png", solid(16, 16, (0, 0, 0)))
    assert set(image_folder(tmp_path, size=16, key="B")[0]) == {"B", "path"}


def test_holdout_split_is_deterministic_disjoint_and_unaugmented(tmp_path):
    rng = np.random.default_rng(6)
    for i in range(20):
        save(tmp_path / f"{i:02d}.png", random_img(rng, 16, 16))
    ds = open_dataset(tmp_path, size=12, load_size=16, augment=True)
    train, held = holdout_split(ds, fraction=0.2, seed=1)
    train2, held2 = holdout_split(ds, fraction=0.2, seed=1)
    assert held.indices == held2.indices and len(held) == 4 and len(train) == 16
    assert not set(held.indices) & set(train.indices)
    assert held.dataset.augment is False and train.dataset.augment is True
    _, held3 = holdout_split(ds, fraction=0.2, seed=2)
    assert held3.indices != held.indices


def test_holdout_keeps_at_least_min_holdout_and_one_training_item(tmp_path):
    for i in range(3):
        save(tmp_path / f"{i}.png", solid(16, 16, (0, 0, 0)))
    ds = open_dataset(tmp_path, size=16)
    train, held = holdout_split(ds, fraction=0.01, min_holdout=1)
    assert (len(train), len(held)) == (2, 1)
    with pytest.raises(GanzipError, match="hold out"):
        holdout_split(ds, fraction=0.01, min_holdout=3)


def test_inspect_source_counts_images_and_skips(tmp_path):
    save(tmp_path / "trainA" / "0.png", solid(16, 16, (0, 0, 0)))
    (tmp_path / "trainA" / "junk.txt").write_text("x")
    save(tmp_path / "trainB" / "0.png", solid(16, 16, (0, 0, 0)))
    info = inspect_source(tmp_path)
    assert info["kind"] == "unpaired"
    assert info["splits"]["train"]["A"]["images"] == 1
    assert info["splits"]["train"]["A"]["skipped"] == 1


# --- CLI -------------------------------------------------------------------------------


def test_cli_info_on_missing_folder_exits_2_with_one_line(cli, tmp_path):
    cli("data", "info", tmp_path / "missing").assert_user_error("does not exist")


def test_cli_info_describes_layout(cli, tmp_path):
    save(tmp_path / "train" / "0.png", solid(32, 16, (0, 0, 0)))
    res = cli("data", "info", tmp_path)
    assert res.exit_code == 0
    assert "paired" in res.stdout and "1 images" in res.stdout

"""Folder layouts, hub-style datasets and label conventions: real data where present, tiny generated folders for the
error cases."""

from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from ssa_hf.data import CONVENTIONS, LabelConvention, check_label_values, load_dataset_split, load_folder


def write_pair(images, masks, stem, size=(8, 6), mask_size=None, values=(0, 1, 2)):
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(images / f"{stem}.jpg")
    width, height = mask_size or size
    mask = np.resize(np.array(values, np.uint8), (height, width))
    Image.fromarray(mask).save(masks / f"{stem}.png")


def test_label_conventions_by_hand():
    ade = CONVENTIONS["ade20k"]
    np.testing.assert_array_equal(ade.apply(np.array([[0, 1, 150], [255, 2, 0]])), [[255, 0, 149], [255, 1, 255]])
    camvid = CONVENTIONS["camvid"]
    np.testing.assert_array_equal(camvid.apply(np.array([[0, 10, 11]])), [[0, 10, 255]])
    with pytest.raises(ValueError, match=r"frame_7.png: label values \[12\]"):
        camvid.apply(np.array([[0, 12]]), source="frame_7.png")
    with pytest.raises(ValueError, match="single-channel"):
        LabelConvention(3).apply(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match=r"\[151\]"):  # 151 -> 150 after reduction: out of range
        ade.apply(np.array([[151]]))



def convert_by_loop(raw, convention):
    """Plain per-pixel reference of LabelConvention.apply (remap first, then the zero-label reduction)."""
    out = np.empty(raw.shape, np.int64)
    for position, value in np.ndenumerate(raw):
        value = convention.remap.get(int(value), int(value))
        if convention.reduce_zero_label and value != convention.ignore_index:
            value = convention.ignore_index if value == 0 else value - 1
        out[position] = value
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float64])
def test_label_convention_matches_a_per_pixel_loop_for_every_mask_dtype(dtype):
    rng = np.random.default_rng(3)
    convention = LabelConvention(7, reduce_zero_label=True, remap={9: 0, 5: 255, 300: 3})
    raw = rng.choice([0, 1, 2, 5, 6, 7, 9, 255, 300] if dtype != np.uint8 else [0, 1, 2, 5, 6, 7, 9, 255],
                     size=(7, 9)).astype(dtype)
    np.testing.assert_array_equal(convention.apply(raw), convert_by_loop(raw, convention))
    # Values absent from the mask never count as invalid (the uint8 path converts a whole 0..max table).
    assert LabelConvention(2, remap={3: 1}).apply(np.array([[0, 3]], dtype)).tolist() == [[0, 1]]
    if dtype in (np.int32, np.float64):
        with pytest.raises(ValueError, match=r"label values \[-1\]"):
            convention.apply(np.array([[1, -1]], dtype))


def test_label_convention_refuses_fractional_and_non_numeric_masks():
    with pytest.raises(ValueError, match="fractional"):
        LabelConvention(3).apply(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="integers"):
        LabelConvention(3).apply(np.array([["a", "b"]]))


def test_camvid_layout_on_real_data(shared_data):
    train = load_folder(shared_data / "camvid", split="train", check_sizes=False)
    validation = load_folder(shared_data / "camvid", split="validation")
    assert len(train) == 367 and len(validation) == 101
    first = validation[0]
    assert first["image"].size == first["annotation"].size == (480, 360)
    labels = CONVENTIONS["camvid"].apply(np.array(first["annotation"]))
    assert set(np.unique(labels)) <= set(range(11)) | {255}
    check_label_values(validation.select(range(10)), CONVENTIONS["camvid"], progress=False)


def test_ade20k_samples_on_real_data(shared_data):
    dataset = load_folder(shared_data / "ade20k_samples", split="validation")
    assert len(dataset) == 3
    assert [dataset[i]["image"].size for i in range(3)] == [(683, 512), (500, 364), (400, 300)]
    check_label_values(dataset, CONVENTIONS["ade20k"], progress=False)
    with pytest.raises(ValueError, match="annotations cannot be used"):
        check_label_values(dataset, LabelConvention(5, reduce_zero_label=True), progress=False)


def test_ade20k_split_layout_and_generic_pairs(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    for split in ("training", "validation"):
        write_pair(root / "images" / split, root / "annotations" / split, f"ADE_{split}_00000001")
    assert len(load_folder(root, split="train")) == 1
    assert len(load_folder(root, split="validation")) == 1
    write_pair(tmp_path / "imgs", tmp_path / "masks", "a")
    write_pair(tmp_path / "imgs", tmp_path / "masks", "b")
    pairs = load_folder(images_dir=tmp_path / "imgs", masks_dir=tmp_path / "masks")
    undecoded = pairs.cast_column("image", datasets.Image(decode=False)).cast_column(
        "annotation", datasets.Image(decode=False)
    )
    assert [Path(row["image"]["path"]).name for row in undecoded] == ["a.jpg", "b.jpg"]
    assert [Path(row["annotation"]["path"]).name for row in undecoded] == ["a.png", "b.png"]


def test_folder_errors_list_the_files(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    write_pair(images, masks, "ok")
    write_pair(images, masks, "wrong_size", mask_size=(5, 5))
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(images / "no_mask.jpg")
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(masks / "no_image.png")
    with pytest.raises(ValueError) as error:
        load_folder(images_dir=images, masks_dir=masks)
    message = str(error.value)
    assert "no_mask.jpg" in message and "no_image.png" in message and "wrong_size.jpg (8, 6)" in message
    (masks / "no_image.png").unlink()
    (images / "no_mask.jpg").unlink()
    (masks / "wrong_size.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="wrong_size.*unreadable"):
        load_folder(images_dir=images, masks_dir=masks)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown layout"):
        load_folder(tmp_path)


def test_saved_and_hub_style_datasets(tmp_path):
    write_pair(tmp_path / "i", tmp_path / "m", "x", values=(0, 3))
    dataset = load_folder(images_dir=tmp_path / "i", masks_dir=tmp_path / "m")
    renamed = dataset.rename_columns({"image": "pixels", "annotation": "mask"})
    renamed.save_to_disk(tmp_path / "saved")
    loaded = load_dataset_split(str(tmp_path / "saved"), image_column="pixels", label_column="mask")
    assert loaded.column_names == ["image", "annotation"]
    np.testing.assert_array_equal(np.array(loaded[0]["annotation"]), np.array(dataset[0]["annotation"]))
    with pytest.raises(ValueError, match=r"missing \['label'\]"):
        load_dataset_split(str(tmp_path / "saved"), image_column="pixels", label_column="label")
    # A local parquet folder goes through datasets.load_dataset, as a hub id would.
    (tmp_path / "parquet").mkdir()
    renamed.to_parquet(str(tmp_path / "parquet" / "train-00000.parquet"))
    from_parquet = load_dataset_split(str(tmp_path / "parquet"), image_column="pixels", label_column="mask")
    np.testing.assert_array_equal(np.array(from_parquet[0]["annotation"]), np.array(dataset[0]["annotation"]))

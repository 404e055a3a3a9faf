"""The benchmark builders on tiny archives that mimic the official downloads file for file (names, folder layout,
`.mat` variables, list files), with label values checked at known pixels, plus the real ADE20K samples."""

import io
import json
import shutil
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from ssa_hf.dataset_builders import (
    COCO_STUFF_NAMES,
    PASCAL_CONTEXT_59,
    DatasetLayoutError,
    build_ade20k,
    build_coco_stuff_10k,
    build_pascal_context_59,
)
from ssa_hf_cli import main as cli_main

scipy_io = pytest.importorskip("scipy.io", reason="the COCO-Stuff and PASCAL-Context builders read .mat files")


def _jpeg(seed: int, size=(24, 16)) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _mat(**variables) -> bytes:
    buffer = io.BytesIO()
    scipy_io.savemat(buffer, variables)
    return buffer.getvalue()


def _labels_with(values: list[int], dtype=np.uint8, shape=(16, 24)) -> np.ndarray:
    """A label map whose first row starts with `values` (the known pixels); the rest is the first value."""
    labels = np.full(shape, values[0], dtype=dtype)
    labels[0, : len(values)] = values
    return labels


def _rows(dataset) -> list[tuple]:
    return [(row["image"].tobytes(), np.array(row["annotation"]).tobytes(), tuple(row["classes"])) for row in dataset]


# --- ADE20K ---------------------------------------------------------------------------------------------------------

ADE_KNOWN = [0, 1, 150, 37, 2]  # raw values at row 0, columns 0..4


def ade_archive(root, with_top_folder=True, drop=None, extra_value=None):
    """ADEChallengeData2016 layout: objectInfo150.txt, images/{training,validation}/ADE_*.jpg, annotations/...png."""
    files = {"objectInfo150.txt": ("Idx\tRatio\tTrain\tVal\tName\n" + "".join(
        f"{i}\t0.01\t10\t1\tclass{i}, synonym{i}\n" for i in range(1, 151))).encode()}
    for split, prefix, count in (("training", "ADE_train", 2), ("validation", "ADE_val", 1)):
        for index in range(1, count + 1):
            stem = f"{prefix}_{index:08d}"
            files[f"images/{split}/{stem}.jpg"] = _jpeg(index + 10 * len(split))
            labels = _labels_with(ADE_KNOWN if index == 1 else [5, 6])
            if extra_value is not None and split == "validation":
                labels[-1, -1] = extra_value
            files[f"annotations/{split}/{stem}.png"] = _png(labels)
    files["sceneCategories.txt"] = b"ADE_train_00000001 airport\n"
    if drop:
        del files[drop]
    path = root / "ADEChallengeData2016.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"ADEChallengeData2016/{name}" if with_top_folder else name, data)
    return path, files


def test_ade20k_from_the_zip_and_from_the_folder(tmp_path):
    path, files = ade_archive(tmp_path)
    built = build_ade20k(path, tmp_path / "ade-hf")
    assert set(built) == {"train", "validation"} and built.num_rows == {"train": 2, "validation": 1}
    names = built["train"].features["classes"].feature.names
    assert len(names) == 150 and names[0] == "class1" and names[149] == "class150"  # first synonym
    first = built["train"][0]
    labels = np.array(first["annotation"])
    np.testing.assert_array_equal(labels[0, :5], [255, 0, 149, 36, 1])  # 0 -> 255, k -> k - 1
    assert first["classes"] == [0, 1, 36, 149]  # the ignore value is not a class
    # The image is the original file, not re-encoded.
    assert built["train"].with_format("arrow")[0]["image"][0]["bytes"].as_py() == \
        files["images/training/ADE_train_00000001.jpg"]
    assert (tmp_path / "ade-hf" / "README.md").read_text().count("class150") == 1

    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(path) as archive:
        archive.extractall(unpacked)
    again = build_ade20k(unpacked, tmp_path / "ade-hf-folder")
    for split in built:  # folder and zip give the same dataset; so does building twice
        assert _rows(again[split]) == _rows(built[split])
    twice = build_ade20k(path, tmp_path / "ade-hf-2")
    assert _rows(twice["validation"]) == _rows(built["validation"])


def test_ade20k_layout_errors_name_what_is_missing(tmp_path):
    path, _ = ade_archive(tmp_path, drop="annotations/training/ADE_train_00000002.png")
    with pytest.raises(DatasetLayoutError, match="ADE_train_00000002"):
        build_ade20k(path, tmp_path / "out")
    path, _ = ade_archive(tmp_path, drop="objectInfo150.txt")
    with pytest.raises(DatasetLayoutError, match="objectInfo150.txt"):
        build_ade20k(path, tmp_path / "out")
    path, _ = ade_archive(tmp_path, extra_value=151)
    with pytest.raises(DatasetLayoutError, match=r"ADE_val_00000001.png: label values \[151\]"):
        build_ade20k(path, tmp_path / "out")
    path, _ = ade_archive(tmp_path)
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError):
        build_ade20k(path, tmp_path / "kept")
    assert (tmp_path / "kept" / "mine.txt").read_text() == "user data"


def test_ade20k_real_samples(shared_data, tmp_path):
    """The three real ADE20K validation pairs in the official layout (also used as the training split here)."""
    samples = shared_data / "ade20k_samples"
    root = tmp_path / "ADEChallengeData2016"
    for split in ("training", "validation"):
        shutil.copytree(samples / "images", root / "images" / split)
        shutil.copytree(samples / "annotations", root / "annotations" / split)
    shutil.copy(samples / "objectInfo150.txt", root / "objectInfo150.txt")
    built = build_ade20k(root, tmp_path / "ade-hf")
    names = built["validation"].features["classes"].feature.names
    assert names[:3] == ["wall", "building", "sky"]
    for row, stem in zip(built["validation"], sorted(p.stem for p in (samples / "images").iterdir())):
        raw = np.array(Image.open(samples / "annotations" / f"{stem}.png")).astype(np.int64)
        expected = np.where(raw == 0, 255, raw - 1)
        np.testing.assert_array_equal(np.array(row["annotation"]), expected)
        assert row["classes"] == sorted(set(np.unique(expected).tolist()) - {255})


# --- COCO-Stuff-10K -------------------------------------------------------------------------------------------------

COCO_KNOWN = [0, 1, 11, 13, 12, 92, 182, 91]  # unlabeled, person, fire hydrant, stop sign, unused, banner, wood, unused
COCO_EXPECTED = [255, 0, 10, 11, 255, 80, 170, 255]


def coco_archive(root, drop=None):
    """cocostuff-10k-v1.1.zip layout: images/<name>.jpg, annotations/<name>.mat (S, names, captions),
    imageLists/{train,test,all}.txt."""
    train = ["COCO_train2014_000000000077", "COCO_train2014_000000000078"]
    test = ["COCO_train2014_000000000081"]
    files = {}
    for index, stem in enumerate(train + test):
        files[f"images/{stem}.jpg"] = _jpeg(index)
        labels = _labels_with(COCO_KNOWN if index == 0 else [149, 169], dtype=np.uint16)
        files[f"annotations/{stem}.mat"] = _mat(S=labels, names=np.array(["unlabeled", "person"], dtype=object),
                                               captions=np.array(["a street"], dtype=object))
    files["imageLists/train.txt"] = ("\n".join(train) + "\n").encode()
    files["imageLists/test.txt"] = ("\n".join(test) + "\n").encode()
    files["imageLists/all.txt"] = ("\n".join(train + test) + "\n").encode()
    if drop:
        del files[drop]
    path = root / "cocostuff-10k-v1.1.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_coco_stuff_10k_mapping_at_known_pixels(tmp_path):
    built = build_coco_stuff_10k(coco_archive(tmp_path), tmp_path / "coco-hf")
    assert built.num_rows == {"train": 2, "test": 1}
    names = built["train"].features["classes"].feature.names
    assert len(names) == 171 and len(COCO_STUFF_NAMES) == 171
    assert (names[0], names[10], names[11], names[80], names[170]) == (
        "person", "fire hydrant", "stop sign", "banner", "wood")
    labels = np.array(built["train"][0]["annotation"])
    np.testing.assert_array_equal(labels[0, : len(COCO_KNOWN)], COCO_EXPECTED)
    second = np.array(built["train"][1]["annotation"])
    assert second[0, 0] == 137 and names[137] == "road" and second[0, 1] == 157 and names[157] == "tree"
    again = build_coco_stuff_10k(coco_archive(tmp_path), tmp_path / "coco-hf-2")
    assert _rows(again["test"]) == _rows(built["test"])


def test_coco_stuff_10k_missing_files_are_named(tmp_path):
    with pytest.raises(DatasetLayoutError, match=r"annotations/COCO_train2014_000000000081.mat"):
        build_coco_stuff_10k(coco_archive(tmp_path, drop="annotations/COCO_train2014_000000000081.mat"),
                             tmp_path / "out")
    with pytest.raises(DatasetLayoutError, match="imageLists/test.txt"):
        build_coco_stuff_10k(coco_archive(tmp_path, drop="imageLists/test.txt"), tmp_path / "out")


# --- PASCAL-Context-59 ----------------------------------------------------------------------------------------------

PASCAL_KNOWN = [0, 2, 458, 1, 284, 459]  # unlabeled, aeroplane, wood, accordion (not in 59), person, last label
PASCAL_59_IDS = sorted(PASCAL_CONTEXT_59)
PASCAL_EXPECTED = [255, 0, 58, 255, PASCAL_59_IDS.index(284), 255]


def pascal_sources(root, context_lists=False, wrong_labels=False):
    """VOCdevkit/VOC2010 (JPEGImages, ImageSets/Main/{train,val}.txt) and trainval.tar.gz (trainval/<id>.mat with
    LabelMap, labels.txt with the 459 classes)."""
    voc = root / "VOCdevkit" / "VOC2010"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    train, val = ["2008_000002", "2008_000003"], ["2008_000007", "2008_000009"]
    for index, stem in enumerate(train + val + ["2008_000010"]):
        (voc / "JPEGImages" / f"{stem}.jpg").write_bytes(_jpeg(index))
    (voc / "ImageSets" / "Main" / "train.txt").write_text("\n".join(train) + "\n")
    (voc / "ImageSets" / "Main" / "val.txt").write_text("\n".join(val + ["2008_000010"]) + "\n")  # 010: no .mat
    if context_lists:
        (voc / "ImageSets" / "SegmentationContext").mkdir(parents=True)
        (voc / "ImageSets" / "SegmentationContext" / "train.txt").write_text(train[0] + "\n")
        (voc / "ImageSets" / "SegmentationContext" / "val.txt").write_text(val[1] + "\n")
    labels_txt = "".join(f"{i}: {PASCAL_CONTEXT_59.get(i, f'class{i}')}\n" for i in range(1, 460))
    if wrong_labels:
        labels_txt = labels_txt.replace("2: aeroplane", "2: accordion").replace("1: class1", "1: aeroplane")
    tar_path = root / "trainval.tar.gz"
    with tarfile.open(tar_path, "w:gz") as archive:
        for index, stem in enumerate(train + val):
            data = _mat(LabelMap=_labels_with(PASCAL_KNOWN if index == 0 else [360, 420], dtype=np.uint16))
            info = tarfile.TarInfo(f"trainval/{stem}.mat")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("labels.txt")
        info.size = len(labels_txt.encode())
        archive.addfile(info, io.BytesIO(labels_txt.encode()))
    return voc, tar_path


def test_pascal_context_59_mapping_and_split(tmp_path):
    voc, annotations = pascal_sources(tmp_path)
    built = build_pascal_context_59(voc, annotations, tmp_path / "pc-hf")
    # VOC2010 Main lists restricted to annotated images: 2008_000010 has no .mat
    assert built.num_rows == {"train": 2, "validation": 2}
    names = built["train"].features["classes"].feature.names
    assert len(names) == 59 and names[0] == "aeroplane" and names[58] == "wood" and names[36] == "person"
    np.testing.assert_array_equal(np.array(built["train"][0]["annotation"])[0, : len(PASCAL_KNOWN)], PASCAL_EXPECTED)
    second = np.array(built["train"][1]["annotation"])
    assert names[second[0, 0]] == "sky" and names[second[0, 1]] == "tree"
    assert "ImageSets/Main" in (tmp_path / "pc-hf" / "README.md").read_text()


def test_pascal_context_59_prefers_the_segmentation_context_lists_and_checks_labels_txt(tmp_path):
    voc, annotations = pascal_sources(tmp_path / "a", context_lists=True)
    built = build_pascal_context_59(voc, annotations, tmp_path / "pc-hf")
    assert built.num_rows == {"train": 1, "validation": 1}
    assert [r["image"].size for r in built["validation"]] == [(24, 16)]
    voc, annotations = pascal_sources(tmp_path / "b", wrong_labels=True)
    with pytest.raises(DatasetLayoutError, match="not at the expected indices"):
        build_pascal_context_59(voc, annotations, tmp_path / "pc-hf-wrong")


# --- the command and the training stack -----------------------------------------------------------------------------


def test_cli_build_dataset_and_evaluate_on_it(tmp_path, capsys):
    import torch
    from helpers import TINY_SEGFORMER

    from ssa_hf import SSAConfig, SSAForSemanticSegmentation

    path, _ = ade_archive(tmp_path)
    output = tmp_path / "ade-hf"
    assert cli_main(["build-dataset", "ade20k", str(path), "--output", str(output)]) == 0
    assert "train 2, validation 1; 150 classes" in capsys.readouterr().out
    assert cli_main(["build-dataset", "ade20k", str(path), "--output", str(output)]) == 2  # not overwritten
    assert cli_main(["build-dataset", "pascal_context_59", str(path), "--output", str(tmp_path / "x")]) == 2
    assert "VOC2010" in capsys.readouterr().err

    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    SSAForSemanticSegmentation(SSAConfig.from_segformer_config(dict(TINY_SEGFORMER), num_labels=150)).save_pretrained(
        model_dir)
    report_path = tmp_path / "eval.json"
    assert cli_main(["evaluate", "--model", str(model_dir), "--data", str(output), "--scale", "96", "64",
                     "--output", str(report_path)]) == 0  # no --convention: the dataset is already converted
    report = json.loads(report_path.read_text())
    assert report["images"] == 1 and report["labelled_pixels"] == 4  # raw 1, 150, 37, 2; the other pixels are 0

    small = tmp_path / "small-model"
    SSAForSemanticSegmentation(SSAConfig.from_segformer_config(dict(TINY_SEGFORMER), num_labels=5)).save_pretrained(
        small)
    assert cli_main(["evaluate", "--model", str(small), "--data", str(output)]) == 2
    assert "mismatched num_labels" in capsys.readouterr().err


def test_training_uses_a_built_dataset_without_converting_labels_again(tmp_path):
    from ssa_hf.data import CONVENTIONS, SegmentationDataset, load_split, training_convention

    path, _ = ade_archive(tmp_path)
    build_ade20k(path, tmp_path / "ade-hf")
    rows = load_split(str(tmp_path / "ade-hf"), "train")
    convention = training_convention(rows, CONVENTIONS["ade20k"], "ade-hf")
    assert not convention.reduce_zero_label and convention.num_labels == 150
    item = SegmentationDataset(rows, convention, lambda image, labels: {"labels": labels})[0]
    np.testing.assert_array_equal(item["labels"][0, :5], [255, 0, 149, 36, 1])
    with pytest.raises(ValueError, match="mismatched num_labels"):
        training_convention(rows, CONVENTIONS["pascal_context_59"], "ade-hf")


def test_push_to_hub_goes_through_the_datasets_and_hub_clients(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    path, _ = ade_archive(tmp_path)
    calls = []
    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub",
                        lambda self, repo_id, **kw: calls.append(("data", repo_id, sorted(self), kw)))
    monkeypatch.setattr(huggingface_hub.DatasetCard, "push_to_hub",
                        lambda self, repo_id, **kw: calls.append(("card", repo_id, self.data.pretty_name)))
    assert cli_main(["build-dataset", "ade20k", str(path), "--output", str(tmp_path / "out"), "--push-to-hub",
                     "me/ade20k", "--private"]) == 0
    assert calls[0][:3] == ("data", "me/ade20k", ["train", "validation"]) and calls[0][3]["private"] is True
    assert calls[1] == ("card", "me/ade20k", "ADE20K (SceneParse150)")


def test_a_hub_copy_in_parquet_keeps_the_class_names_and_trains_without_conversion(tmp_path):
    """What `push_to_hub` uploads (parquet shards under data/) loads through the same path as a hub id."""
    from ssa_hf.data import label_names, load_split, training_convention

    path, _ = ade_archive(tmp_path)
    built = build_ade20k(path, tmp_path / "ade-hf")
    repo = tmp_path / "hub-copy"
    for split, dataset in built.items():
        dataset.to_parquet(str(repo / "data" / f"{split}-00000-of-00001.parquet"))
    rows = load_split(str(repo), "validation")
    assert label_names(rows) == built["validation"].features["classes"].feature.names
    assert training_convention(rows, None, "hub-copy").num_labels == 150
    np.testing.assert_array_equal(np.array(rows[0]["annotation"]), np.array(built["validation"][0]["annotation"]))

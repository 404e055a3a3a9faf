"""Semantic-segmentation data as `datasets.Dataset`s of (image, annotation) pairs, from local folders in the standard
layouts or from the hub, with explicit per-dataset label conventions.

Folders are paired by file stem and stored as paths (`datasets.Image` decodes lazily; `save_to_disk` embeds the
bytes). `imagefolder` is not used: it treats masks as more images and infers splits from ADE-style names.
"""

from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
from PIL import Image

from .model.image_processing_ssa import IGNORE_INDEX, LabelConvention

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
MASK_SUFFIXES = {".png", ".bmp", ".tif", ".tiff"}
_SPLIT_NAMES = {"train": ("train", "training"), "validation": ("validation", "val"), "test": ("test", "testing")}


# The raw-annotation conventions of the datasets the recipes name (read-only: pass your own LabelConvention instead).
CONVENTIONS = MappingProxyType({
    "ade20k": LabelConvention(150, reduce_zero_label=True),
    "coco_stuff_10k": LabelConvention(171, reduce_zero_label=True),
    "pascal_context_59": LabelConvention(59, reduce_zero_label=True),
    "camvid": LabelConvention(11, remap={11: IGNORE_INDEX}),
})


def named_convention(name: str) -> LabelConvention:
    """The convention of a dataset the recipes name (`CONVENTIONS`); a clear error for other names."""
    if name not in CONVENTIONS:
        raise ValueError(f"unknown label convention {name!r}; known: {', '.join(sorted(CONVENTIONS))}")
    return CONVENTIONS[name]


def _files(folder: Path, suffixes: set[str]) -> dict[str, Path]:
    """Files of `folder` by stem; two files with one stem (`a.jpg` and `a.png`) cannot be paired and raise."""
    files, shared = {}, []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            if path.stem in files:
                shared.append(f"{files[path.stem].name} and {path.name}")
            files[path.stem] = path
    if shared:
        raise ValueError(f"{folder}: files pair by name without suffix, and these share one: {shared[:10]}; keep one "
                         f"of each.")
    return files


def _split_folder(parent: Path, split: str) -> Path | None:
    for name in _SPLIT_NAMES.get(split, (split,)):
        if (parent / name).is_dir():
            return parent / name
    return None


def find_pairs(images_dir: str | Path, masks_dir: str | Path, check_sizes: bool = True) -> list[tuple[Path, Path]]:
    """Pair images and masks by file stem. Missing masks, masks without images and size mismatches raise a
    `ValueError` that lists the files."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"folder {folder} does not exist")
    images, masks = _files(images_dir, IMAGE_SUFFIXES), _files(masks_dir, MASK_SUFFIXES)
    if not images:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {images_dir}")
    problems = []
    if missing := sorted(set(images) - set(masks)):
        problems.append(f"{len(missing)} images without a mask in {masks_dir}: {[images[s].name for s in missing[:10]]}")
    if orphans := sorted(set(masks) - set(images)):
        problems.append(f"{len(orphans)} masks without an image in {images_dir}: {[masks[s].name for s in orphans[:10]]}")
    pairs = [(images[stem], masks[stem]) for stem in sorted(set(images) & set(masks))]
    if check_sizes:
        mismatched = []
        for image_path, mask_path in pairs:
            try:
                with Image.open(image_path) as image, Image.open(mask_path) as mask:
                    if image.size != mask.size:
                        mismatched.append(f"{image_path.name} {image.size} vs {mask_path.name} {mask.size}")
            except OSError as error:
                mismatched.append(f"{image_path.name} / {mask_path.name}: unreadable ({error})")
        if mismatched:
            problems.append(f"{len(mismatched)} pairs whose image and mask differ in size or cannot be read: "
                            f"{mismatched[:10]}")
    if problems:
        raise ValueError("; ".join(problems))
    return pairs


def detect_layout(root: str | Path, split: str) -> tuple[str, Path, Path]:
    """Recognise ADEChallengeData2016 (`images/`, `annotations/`, with or without `training`/`validation`
    subfolders) or the CamVid layout (`<split>/images`, `<split>/labels`). Returns (layout, images, masks)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    if (root / "images").is_dir() and (root / "annotations").is_dir():
        images, masks = _split_folder(root / "images", split), _split_folder(root / "annotations", split)
        if images is not None and masks is not None:
            return "ade20k", images, masks
        if _files(root / "images", IMAGE_SUFFIXES):  # a flat sample folder such as ade20k_samples
            return "ade20k", root / "images", root / "annotations"
        raise ValueError(f"{root}: ADE20K layout without a '{split}' split under images/ and annotations/")
    split_dir = _split_folder(root, split)
    if split_dir is not None and (split_dir / "images").is_dir() and (split_dir / "labels").is_dir():
        return "camvid", split_dir / "images", split_dir / "labels"
    raise ValueError(
        f"{root}: unknown layout for split '{split}'. Expected images/ + annotations/ (ADE20K) or "
        f"{split}/images + {split}/labels (CamVid); for other layouts pass images_dir and masks_dir."
    )


def load_folder(
    root: str | Path | None = None,
    split: str = "train",
    images_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
    check_sizes: bool = True,
):
    """A `datasets.Dataset` with `image` and `annotation` columns (paths decoded lazily as PIL images).

    Args:
        root: a dataset folder in a known layout (ADE20K or CamVid, see `detect_layout`).
        split: the split to read under `root` (`train`, `validation`, `test`).
        images_dir: instead of `root`, a folder of images ...
        masks_dir: ... and a folder of masks, paired with the images by file stem.
        check_sizes: open every pair and refuse images and masks of different sizes.

    Returns:
        `datasets.Dataset`: the pairs, stored as paths.
    """
    import datasets

    if images_dir is not None or masks_dir is not None:
        if images_dir is None or masks_dir is None:
            raise ValueError("pass both images_dir and masks_dir")
    else:
        if root is None:
            raise ValueError("pass a dataset root folder, or images_dir and masks_dir")
        _, images_dir, masks_dir = detect_layout(root, split)
    pairs = find_pairs(images_dir, masks_dir, check_sizes=check_sizes)
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    return datasets.Dataset.from_dict(
        {"image": [str(p) for p, _ in pairs], "annotation": [str(m) for _, m in pairs]}, features=features
    )


def load_dataset_split(path_or_id: str, split: str = "train", image_column: str = "image",
                       label_column: str = "annotation"):
    """A split from a hub dataset id or a local `save_to_disk` folder, with its columns renamed to `image` and
    `annotation`.

    Args:
        path_or_id: a hub dataset id or a `save_to_disk` folder.
        split: the split; a dataset without `validation` gives its `test` split for it (as COCO-Stuff-10K).
        image_column: the column holding the images.
        label_column: the column holding the annotations.

    Returns:
        `datasets.Dataset`: the split.
    """
    import datasets

    path = Path(path_or_id)
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split == "validation" and split not in loaded and "test" in loaded:
                print(f"note: {path_or_id} has no validation split; using its test split (as COCO-Stuff-10K papers)")
                split = "test"
            if split not in loaded:
                raise DataError(f"{path_or_id} has splits {sorted(loaded)}, not '{split}'")
            loaded = loaded[split]
    else:
        try:
            loaded = datasets.load_dataset(path_or_id, split=split)
        except ValueError as error:  # "Unknown split "validation". Should be one of ['train', 'test']."
            if split != "validation" or "'test'" not in str(error):
                raise
            print(f"note: {path_or_id} has no validation split; using its test split")
            loaded = datasets.load_dataset(path_or_id, split="test")
    missing = [c for c in (image_column, label_column) if c not in loaded.column_names]
    if missing:
        raise DataError(f"{path_or_id} has columns {loaded.column_names}; missing {missing} (set image_column / "
                        f"label_column)")
    renames = {old: new for old, new in ((image_column, "image"), (label_column, "annotation")) if old != new}
    return loaded.rename_columns(renames) if renames else loaded


def check_label_values(dataset, convention: LabelConvention, progress: bool = True) -> None:
    """Decode every annotation and apply the convention; a `ValueError` lists the files that cannot be decoded or
    hold unexpected values."""
    from tqdm.auto import tqdm

    problems = []
    annotations = undecoded(dataset.select_columns(["annotation"]))  # decode the masks only, naming failures
    for index in tqdm(range(len(annotations)), desc="checking labels", disable=not progress):
        try:
            mask, name = open_image(annotations[index]["annotation"], "annotation", index)
            convention.apply(np.array(mask), source=name)
        except ValueError as error:
            problems.append(str(error))
    if problems:
        raise DataError(f"{len(problems)} annotations cannot be used:\n" + "\n".join(problems[:20]))


def load_split(data: str, split: str, image_column: str = "image", label_column: str = "annotation",
               streaming: bool = False):
    """A local folder of images and masks in a known layout, a `save_to_disk` folder, a hub dataset id, or a local
    copy of a hub dataset repository (parquet shards). With `streaming`, a hub id or parquet copy is read as a
    `datasets.IterableDataset` (rows decoded as they are read, nothing converted to Arrow on disk)."""
    path = Path(data)
    if not path.exists():
        return _hub_split(data, split, image_column, label_column, streaming)
    saved = (path / "dataset_dict.json").exists() or (path / "state.json").exists()
    if path.is_dir() and not saved and not any(path.glob("**/*.parquet")):
        if streaming:
            raise ValueError(f"{data}: --streaming reads hub datasets or their parquet copies; a folder of image "
                             f"files is read lazily already, without it.")
        return load_folder(path, split=split, check_sizes=False)
    if streaming:
        return load_streaming_split(data, split, image_column, label_column)
    return load_dataset_split(data, split=split, image_column=image_column, label_column=label_column)


def _hub_split(data: str, split: str, image_column: str, label_column: str, streaming: bool):
    """A split of a hub dataset id: when the hub cannot provide it (offline, no such dataset, a mistyped local
    folder), one line names both places that were looked in."""
    loader = load_streaming_split if streaming else load_dataset_split
    try:
        if not _hub_offline():  # one quick question first: datasets' own loader retries for half a minute
            from huggingface_hub import HfApi

            HfApi().dataset_info(data, timeout=10)
        return loader(data, split, image_column=image_column, label_column=label_column)
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001 - the hub client and datasets raise many types for "not there"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"--data {data}: no such folder ({Path(data).resolve()}), and not a dataset the hub could "
                        f"provide ({reason}; for a copy in the datasets cache, set HF_HUB_OFFLINE=1)") from error


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE: datasets then answers from its cache at once, and the hub must not be asked."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def load_streaming_split(data: str, split: str, image_column: str = "image", label_column: str = "annotation"):
    """A split of a hub dataset id or a local parquet copy as a `datasets.IterableDataset`."""
    import datasets

    path = Path(data)
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        raise ValueError(f"{data} is a save_to_disk folder, already on disk: load it without --streaming.")
    try:
        rows = datasets.load_dataset(str(data), split=split, streaming=True)
    except ValueError as error:
        if split != "validation" or "test" not in str(error):
            raise
        print(f"note: {data} has no validation split; using its test split")
        rows = datasets.load_dataset(str(data), split="test", streaming=True)
    missing = [c for c in (image_column, label_column) if c not in (rows.column_names or [])]
    if missing:
        raise DataError(f"{data} has columns {rows.column_names}; missing {missing} (set image_column / label_column)")
    renames = {old: new for old, new in ((image_column, "image"), (label_column, "annotation")) if old != new}
    return rows.rename_columns(renames) if renames else rows


class DataError(ValueError):
    """A data file that cannot be used as it is; the message names the file and what is wrong."""


# PIL modes of more than 8 bits per channel: converting them to RGB clips, so the network would see other pixels.
_HIGH_BIT_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_EXIF_ORIENTATION = 0x0112


def undecoded(rows):
    """`rows` with the image and annotation columns left undecoded ({"path", "bytes"} dicts): `decode_pair` decodes
    them, so that a file that fails to decode is named, in the main process or in a data-loading worker."""
    import datasets

    if not hasattr(rows, "cast_column"):  # a list of rows
        return rows
    for column in ("image", "annotation"):
        if column in (rows.column_names or ()):
            rows = rows.cast_column(column, datasets.Image(decode=False))
    return rows


def open_image(value, what: str, index: int | None = None) -> tuple[Image.Image, str]:
    """A fully decoded PIL image and its name, from a decoded image or an undecoded {"path", "bytes"} row value.
    Unreadable or truncated files raise a `DataError` naming the file."""
    import io

    if isinstance(value, Image.Image):
        return value, Path(getattr(value, "filename", "") or f"row {index}").name
    path, data = (value.get("path"), value.get("bytes")) if isinstance(value, dict) else (value, None)
    name = Path(path).name if path else f"row {index}"
    try:
        image = Image.open(io.BytesIO(data) if data is not None else path)
        image.load()
    except Image.DecompressionBombError as error:  # PIL refuses more than twice Image.MAX_IMAGE_PIXELS
        raise DataError(f"{name}: the {what} is too large to decode safely ({error}). Downscale it, or raise "
                        f"PIL.Image.MAX_IMAGE_PIXELS if you trust the file.") from None
    except (OSError, SyntaxError, ValueError) as error:  # PIL's truncated / broken-stream / unidentified errors
        raise DataError(f"{name}: the {what} cannot be decoded ({error}).") from None
    return image, name


def decode_pair(row: dict, convention: LabelConvention, index: int | None = None) -> tuple[Image.Image, np.ndarray]:
    """The RGB image and the int64 label map of one (image, annotation) row (decoded or undecoded): the one place
    where raw files meet the label convention. Every file that cannot be used as stored raises a `DataError` naming
    it: undecodable or truncated files, multi-frame files, images of more than 8 bits per channel, EXIF orientations
    (the picture shown is not the pixels stored, so the mask's alignment is unknown), lossy JPEG annotations,
    multi-channel masks, unexpected label values, and image/mask size mismatches.

    Args:
        row: a row with `image` and `annotation` (PIL images, or undecoded {"path", "bytes"} values).
        convention: the `LabelConvention` that turns raw mask values into labels.
        index: the row's index, named in errors about files without a name.

    Returns:
        `tuple[PIL.Image.Image, numpy.ndarray]`: the RGB image and its (H, W) int64 labels.
    """
    mask, mask_name = open_image(row["annotation"], "annotation", index)
    image, image_name = open_image(row["image"], "image", index)
    for picture, name in ((image, image_name), (mask, mask_name)):
        if getattr(picture, "n_frames", 1) > 1:
            raise DataError(f"{name}: {picture.n_frames} frames (an animated or multi-page file); which one is meant "
                            f"is unknown. Store a single frame.")
        orientation = picture.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation not in (0, 1):
            raise DataError(f"{name}: EXIF orientation {orientation} (shown rotated or mirrored, stored otherwise); "
                            f"whether its annotation follows the stored or the shown pixels is unknown. Store it "
                            f"upright (PIL.ImageOps.exif_transpose) with its mask transformed alike, or drop the tag.")
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        raise DataError(f"{image_name}: a {image.mode} image (more than 8 bits per channel); converting it to RGB "
                        f"would clip it. Convert it to 8-bit RGB first.")
    if mask.format == "JPEG":
        raise DataError(f"{mask_name}: a JPEG annotation; lossy compression changes label values at edges. Use PNG.")
    labels = convention.apply(np.array(mask), source=mask_name)
    image = image.convert("RGB")
    if labels.shape != (image.height, image.width):
        raise DataError(f"{mask_name}: the label map is {labels.shape[1]}x{labels.shape[0]} but its image "
                        f"{image_name} is {image.width}x{image.height}; image and annotation must have the same size.")
    return image, labels


class SegmentationDataset(torch.utils.data.Dataset):
    """Decodes (image, annotation) rows, applies the label convention and a transform.

    Indexed by an int, or by (row, seed): the seed then fixes the item's augmentation, so a run's data depends only on
    its seed and position (exact resume, and the same views whichever worker loads them).
    """

    def __init__(self, rows, convention: LabelConvention, transform):
        self.rows, self.convention, self.transform = undecoded(rows), convention, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, labels = decode_pair(self.rows[index], self.convention, index)
        if seed is not None:
            torch.manual_seed(seed)
        return self.transform(image, labels)


class StreamingSegmentationDataset(torch.utils.data.IterableDataset):
    """A streamed split (`datasets.IterableDataset`) as training views: each epoch reads the stream shuffled with a
    buffer (seeded by seed and epoch), and the n-th item of the run takes augmentation seed `base + n`, so a resumed
    run skips the items already seen and continues with the same views. Iterated in the main process."""

    def __init__(self, rows, convention: LabelConvention, transform, seed: int, batch_size: int,
                 shuffle_buffer: int = 1000):
        self.rows, self.convention, self.transform = rows, convention, transform
        self.seed, self.batch_size, self.shuffle_buffer = seed, batch_size, shuffle_buffer
        self.start_item = 0

    def __iter__(self):
        item, epoch = 0, 0
        while True:
            # Undecoded rows: the items a resumed run skips cost no image decoding.
            stream = self.rows.decode(False).shuffle(seed=self.seed * 1_000_003 + epoch,
                                                     buffer_size=self.shuffle_buffer)
            seen_in_epoch = 0
            for row in stream:
                seen_in_epoch += 1
                if item >= self.start_item:
                    image, labels = decode_pair(row, self.convention, item)
                    torch.manual_seed((self.seed * 1_000_003 + 7) * 1_000_003 + item)
                    yield self.transform(image, labels)
                item += 1
            if seen_in_epoch < self.batch_size:
                raise ValueError(f"the streamed training split has {seen_in_epoch} rows, fewer than one batch of "
                                 f"{self.batch_size}")
            epoch += 1


def label_names(rows) -> list[str] | None:
    """Class names of a dataset already in the training convention (built by `ssa_hf.dataset_builders`: a `classes`
    column of `ClassLabel`s), or None for raw datasets, whose labels still need a `LabelConvention`."""
    import datasets

    feature = (getattr(rows, "features", None) or {}).get("classes")
    if isinstance(feature, datasets.Sequence) and isinstance(feature.feature, datasets.ClassLabel):
        return list(feature.feature.names)
    if isinstance(feature, datasets.List) and isinstance(getattr(feature, "feature", None), datasets.ClassLabel):
        return list(feature.feature.names)
    return None


def training_convention(rows, convention: "LabelConvention | None", source: str = "the dataset") -> LabelConvention:
    """The convention to apply to `rows`: none (identity, ignore 255) for a built dataset, whose class count must then
    match `convention`'s when one is given; else `convention`, which is then required."""
    names = label_names(rows)
    if names is None:
        if convention is None:
            raise ValueError(f"{source} holds raw annotations: name its label convention (e.g. --convention ade20k).")
        return convention
    if convention is not None and convention.num_labels != len(names):
        raise ValueError(f"{source} has {len(names)} classes ({', '.join(names[:3])}, ...) but {convention.num_labels} "
                         f"were expected: mismatched num_labels.")
    return LabelConvention(len(names))

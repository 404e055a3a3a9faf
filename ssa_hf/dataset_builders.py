"""The paper's three benchmarks as `datasets.DatasetDict`s, built from the official downloads.

Each builder reads the raw release (a zip, or its unpacked folder), converts the annotations to the training
convention (classes 0..K-1, ignore 255), and returns a `DatasetDict` with columns `image` (the original encoded file,
not re-encoded), `annotation` (PNG of the converted labels) and `classes` (the classes present, a sequence of
`ClassLabel` whose names are the class names). Rows are generated one at a time into Arrow files, so memory stays
bounded whatever the dataset size; rows are sorted by file name, so building twice gives identical datasets.

    ssa-seg build-dataset ade20k ADEChallengeData2016.zip --output ade20k-hf
    ssa-seg build-dataset coco_stuff_10k cocostuff-10k-v1.1.zip --output coco-stuff-10k-hf
    ssa-seg build-dataset pascal_context_59 VOCdevkit/VOC2010 trainval.tar.gz --output pascal-context-59-hf

The label mappings below are data, with their sources.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from .model.image_processing_ssa import IGNORE_INDEX, LabelConvention

# --- COCO-Stuff-10K ---------------------------------------------------------------------------------------------------
# cocostuff-10k-v1.1 `.mat` annotations store S with 0 = unlabeled and the COCO-Stuff ids 1..182 (things 1..91, stuff
# 92..182; labels.md of github.com/nightrome/cocostuff). Eleven thing ids have no annotations in COCO (below); the
# literature (and mmseg's tools/convert_datasets/coco_stuff10k.py, clsID_to_trID) drops them, numbering the remaining
# 171 classes in id order, and ignores 0.
COCO_STUFF_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
COCO_STUFF_NAMES = {  # COCO-Stuff id -> name, the 171 used classes (labels.md of the COCO-Stuff repository)
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck", 9: "boat",
    10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench", 16: "bird",
    17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear", 24: "zebra",
    25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase", 34: "frisbee",
    35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat", 40: "baseball glove",
    41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass", 47: "cup", 48: "fork",
    49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple", 54: "sandwich", 55: "orange", 56: "broccoli",
    57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut", 61: "cake", 62: "chair", 63: "couch", 64: "potted plant",
    65: "bed", 67: "dining table", 70: "toilet", 72: "tv", 73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard",
    77: "cell phone", 78: "microwave", 79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book",
    85: "clock", 86: "vase", 87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush", 92: "banner",
    93: "blanket", 94: "branch", 95: "bridge", 96: "building-other", 97: "bush", 98: "cabinet", 99: "cage",
    100: "cardboard", 101: "carpet", 102: "ceiling-other", 103: "ceiling-tile", 104: "cloth", 105: "clothes",
    106: "clouds", 107: "counter", 108: "cupboard", 109: "curtain", 110: "desk-stuff", 111: "dirt",
    112: "door-stuff", 113: "fence", 114: "floor-marble", 115: "floor-other", 116: "floor-stone", 117: "floor-tile",
    118: "floor-wood", 119: "flower", 120: "fog", 121: "food-other", 122: "fruit", 123: "furniture-other",
    124: "grass", 125: "gravel", 126: "ground-other", 127: "hill", 128: "house", 129: "leaves", 130: "light",
    131: "mat", 132: "metal", 133: "mirror-stuff", 134: "moss", 135: "mountain", 136: "mud", 137: "napkin",
    138: "net", 139: "paper", 140: "pavement", 141: "pillow", 142: "plant-other", 143: "plastic", 144: "platform",
    145: "playingfield", 146: "railing", 147: "railroad", 148: "river", 149: "road", 150: "rock", 151: "roof",
    152: "rug", 153: "salad", 154: "sand", 155: "sea", 156: "shelf", 157: "sky-other", 158: "skyscraper",
    159: "snow", 160: "solid-other", 161: "stairs", 162: "stone", 163: "straw", 164: "structural-other",
    165: "table", 166: "tent", 167: "textile-other", 168: "towel", 169: "tree", 170: "vegetable",
    171: "wall-brick", 172: "wall-concrete", 173: "wall-other", 174: "wall-panel", 175: "wall-stone",
    176: "wall-tile", 177: "wall-wood", 178: "water-other", 179: "waterdrops", 180: "window-blind",
    181: "window-other", 182: "wood",
}

# --- PASCAL-Context-59 ------------------------------------------------------------------------------------------------
# The PASCAL-Context release (cs.stanford.edu/~roozbeh/pascal-context: trainval.tar.gz) stores `LabelMap` (uint16)
# per image in trainval/<id>.mat with the 1-based indices of its labels.txt (459 classes; 0 = unlabeled). The
# 59-class benchmark keeps the 59 most frequent classes (59_labels.txt; the same ids as mmseg's
# tools/convert_datasets/pascal_context.py `_mapping`), numbered in id order; background and every other class are
# ignored.
PASCAL_CONTEXT_59 = {  # labels.txt index -> name
    2: "aeroplane", 9: "bag", 18: "bed", 19: "bedclothes", 22: "bench", 23: "bicycle", 25: "bird", 31: "boat",
    33: "book", 34: "bottle", 44: "building", 45: "bus", 46: "cabinet", 59: "car", 65: "cat", 68: "ceiling",
    72: "chair", 80: "cloth", 85: "computer", 98: "cow", 104: "cup", 105: "curtain", 113: "dog", 115: "door",
    144: "fence", 158: "floor", 159: "flower", 162: "food", 187: "grass", 189: "ground", 207: "horse",
    220: "keyboard", 232: "light", 258: "motorbike", 259: "mountain", 260: "mouse", 284: "person", 295: "plate",
    296: "platform", 308: "pottedplant", 324: "road", 326: "rock", 347: "sheep", 349: "shelves", 354: "sidewalk",
    355: "sign", 360: "sky", 366: "snow", 368: "sofa", 397: "table", 415: "track", 416: "train", 420: "tree",
    424: "truck", 427: "tvmonitor", 440: "wall", 445: "water", 454: "window", 458: "wood",
}
PASCAL_CONTEXT_NUM_RAW = 459


def _numbered(used_ids, num_raw: int) -> dict[int, int]:
    """Raw ids 0..num_raw -> the training label: `used_ids` numbered in id order, every other id ignored."""
    index = {raw: label for label, raw in enumerate(sorted(used_ids))}
    return {raw: index.get(raw, IGNORE_INDEX) for raw in range(num_raw + 1)}


# The label conventions of the raw releases (values beyond the raw range are refused, naming the file).
RAW_CONVENTIONS = {
    "ade20k": LabelConvention(150, reduce_zero_label=True),
    "coco_stuff_10k": LabelConvention(171, remap=_numbered(COCO_STUFF_NAMES, 182)),
    "pascal_context_59": LabelConvention(59, remap=_numbered(PASCAL_CONTEXT_59, PASCAL_CONTEXT_NUM_RAW)),
}

# Split sizes of the official releases (printed as a note when a build differs: partial downloads).
OFFICIAL_SIZES = {
    "ade20k": {"train": 20210, "validation": 2000},
    "coco_stuff_10k": {"train": 9000, "test": 1000},
    "pascal_context_59": {"train": 4996, "validation": 5104},
}


class DatasetLayoutError(ValueError):
    """The raw download does not have the official layout; the message names what is missing."""


# --- reading folders and archives alike -------------------------------------------------------------------------------


class _Source:
    """Files of a folder or a zip archive under a root located by a marker file (the archive's top folder may vary)."""

    def __init__(self, path: str | Path, marker: str, what: str):
        self.path = Path(path)
        if not self.path.exists():
            raise DatasetLayoutError(f"{what}: {self.path} does not exist.")
        self.zip = None
        if self.path.is_dir():
            names = [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]
        elif zipfile.is_zipfile(self.path):
            self.zip = zipfile.ZipFile(self.path)
            names = [n for n in self.zip.namelist() if not n.endswith("/")]
        else:
            raise DatasetLayoutError(f"{what}: {self.path} is neither a folder nor a zip archive.")
        roots = sorted({"" if n == marker else n[: -len(marker) - 1] for n in names
                        if n == marker or n.endswith("/" + marker)}, key=len)
        if not roots:
            raise DatasetLayoutError(f"{what}: {self.path} has no {marker}; is this the official download?")
        self.root = roots[0]
        prefix = f"{self.root}/" if self.root else ""
        self.files = {n[len(prefix):] for n in names if n.startswith(prefix)}

    def list(self, folder: str, suffix: str) -> list[str]:
        prefix = folder.rstrip("/") + "/"
        return sorted(n for n in self.files if n.startswith(prefix) and n.endswith(suffix) and "/" not in
                      n[len(prefix):])

    def has(self, name: str) -> bool:
        return name in self.files

    def read(self, name: str) -> bytes:
        full = f"{self.root}/{name}" if self.root else name
        if self.zip is not None:
            return self.zip.read(full)
        return (self.path / full).read_bytes()

    def describe(self, name: str) -> str:
        return f"{self.path}:{self.root + '/' if self.root else ''}{name}"


def _extract_tar(path: Path, workdir: Path) -> Path:
    """Unpack a (gzipped) tar into workdir with a progress bar; refuses members that would land outside it."""
    from tqdm.auto import tqdm

    target = workdir / path.name.split(".")[0]
    with tarfile.open(path) as archive:
        members = archive.getmembers()
        for member in tqdm(members, desc=f"unpacking {path.name}", disable=len(members) < 100):
            if not (member.isfile() or member.isdir()):
                continue
            try:
                archive.extract(member, target, filter="data")
            except tarfile.FilterError as error:  # ../ paths, absolute paths, links leaving the archive
                raise DatasetLayoutError(f"{path}: member {member.name!r} would be written outside the unpacked "
                                         f"folder ({error}); the archive is refused.") from None
    return target


# --- conversion --------------------------------------------------------------------------------------------------------


def _convert(raw: np.ndarray, key: str, source: str) -> np.ndarray:
    """Raw annotation -> uint8 training labels with the release's convention; bad values raise, naming `source`."""
    try:
        return RAW_CONVENTIONS[key].apply(raw, source).astype(np.uint8)
    except ValueError as error:
        raise DatasetLayoutError(str(error)) from None


def _png(labels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(labels, mode="L").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _read_mat(data: bytes, key: str, source: str) -> np.ndarray:
    try:
        from scipy.io import loadmat
    except ImportError as error:
        raise ImportError("reading MATLAB .mat annotations needs scipy: pip install 'ssa-hf[datasets]'") from error
    try:
        contents = loadmat(io.BytesIO(data))
    except Exception as error:  # noqa: BLE001 - a corrupt file for the user, whatever scipy raises
        raise DatasetLayoutError(f"{source}: not a readable MATLAB file ({error}).") from error
    if key not in contents:
        raise DatasetLayoutError(f"{source}: no '{key}' variable (has {sorted(k for k in contents if k[0] != '_')}).")
    return contents[key]


@dataclass
class _Row:
    name: str
    read_image: Callable[[], bytes]
    read_labels: Callable[[], np.ndarray]  # converted labels


def _generate(rows: tuple[_Row, ...], num_classes: int, split: str) -> Iterator[dict]:
    from tqdm.auto import tqdm

    for row in tqdm(rows, desc=f"converting {split}", unit="image"):
        labels = row.read_labels()
        present = np.unique(labels)
        yield {
            "image": {"bytes": row.read_image(), "path": row.name},
            "annotation": {"bytes": _png(labels), "path": PurePosixPath(row.name).stem + ".png"},
            "classes": [int(c) for c in present if c < num_classes],
        }


def _to_dataset_dict(splits: dict[str, list[_Row]], names: list[str], key: str, card: str, output: Path):
    """Generate each split into Arrow (bounded memory), `save_to_disk` to output with the card as README.md, and
    return the saved DatasetDict."""
    import datasets

    features = datasets.Features({
        "image": datasets.Image(),
        "annotation": datasets.Image(),
        "classes": datasets.Sequence(datasets.ClassLabel(names=names)),
    })
    built = {}
    # A fresh generator cache per build: a rebuilt source must never be answered from an old cache.
    with tempfile.TemporaryDirectory(prefix="ssa-hf-build-") as cache:
        for split, rows in splits.items():
            if not rows:
                raise DatasetLayoutError(f"{key}: the {split} split is empty.")
            try:
                built[split] = datasets.Dataset.from_generator(
                    # rows in a tuple: datasets would shard a list argument into one generator call per item
                    _generate, gen_kwargs={"rows": tuple(rows), "num_classes": len(names), "split": split},
                    features=features, cache_dir=cache, writer_batch_size=64, split=datasets.NamedSplit(split),
                )
            except datasets.exceptions.DatasetGenerationError as error:
                cause = error.__cause__
                raise (cause if isinstance(cause, (DatasetLayoutError, ImportError, OSError)) else error) from None
            expected = OFFICIAL_SIZES[key].get(split)
            if expected is not None and len(rows) != expected:
                print(f"note: {key} {split} has {len(rows)} images; the official release has {expected}.")
        if output.exists():
            shutil.rmtree(output)  # empty, or overwrite=True: _check_output ran before the work
        datasets.DatasetDict(built).save_to_disk(str(output))
    (output / "README.md").write_text(card)
    return datasets.load_from_disk(str(output))


def _check_output(output: str | Path, overwrite: bool, *sources: str | Path) -> Path:
    """The output folder, checked before any work: empty or absent, or (with `overwrite`) an earlier build; never a
    folder that holds or lies inside a source."""
    output = Path(output)
    resolved = output.resolve()
    for source in sources:
        source = Path(source).resolve()
        if source == resolved or resolved in source.parents or source in resolved.parents:
            raise DatasetLayoutError(f"the output folder {output} and the source {source} overlap; write the dataset "
                                     f"elsewhere (nothing was changed).")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{output} exists and is not empty; choose another folder or pass --overwrite.")
        if not (output / "dataset_dict.json").is_file():
            raise FileExistsError(f"{output} is not a dataset built earlier (no dataset_dict.json); --overwrite only "
                                  f"replaces those. Choose another folder (nothing was changed).")
    return output


# --- the three builders ------------------------------------------------------------------------------------------------


def build_ade20k(source: str | Path, output: str | Path, overwrite: bool = False):
    """ADE20K (SceneParse150) from `ADEChallengeData2016.zip` or its folder: train 20,210 / validation 2,000 images,
    150 classes named by objectInfo150.txt (first synonym); raw 0 ("other") -> 255, k -> k - 1."""
    output = _check_output(output, overwrite, source)
    src = _Source(source, "objectInfo150.txt", "ADE20K")
    names = _ade_names(src.read("objectInfo150.txt").decode("utf-8"), src.describe("objectInfo150.txt"))
    splits = {}
    for split, folder in (("train", "training"), ("validation", "validation")):
        images = src.list(f"images/{folder}", ".jpg")
        annotations = set(src.list(f"annotations/{folder}", ".png"))
        if not images:
            raise DatasetLayoutError(f"ADE20K: no images in {src.describe(f'images/{folder}/')}.")
        missing = [n for n in images if f"annotations/{folder}/{PurePosixPath(n).stem}.png" not in annotations]
        if missing:
            raise DatasetLayoutError(
                f"ADE20K: {len(missing)} {split} images have no annotation in annotations/{folder}/, e.g. "
                f"{', '.join(PurePosixPath(n).name for n in missing[:5])}.")
        splits[split] = [_Row(PurePosixPath(n).name, (lambda n=n: src.read(n)), (lambda n=n, f=folder: _convert(
            np.array(Image.open(io.BytesIO(src.read(f"annotations/{f}/{PurePosixPath(n).stem}.png")))), "ade20k",
            src.describe(f"annotations/{f}/{PurePosixPath(n).stem}.png")))) for n in images]
    return _to_dataset_dict(splits, names, "ade20k", dataset_card("ade20k", names, splits), output)


def _ade_names(text: str, source: str) -> list[str]:
    rows = [line.split("\t") for line in text.strip().splitlines()[1:]]
    if len(rows) != 150 or any(len(r) < 5 or r[0].strip() != str(i + 1) for i, r in enumerate(rows)):
        raise DatasetLayoutError(f"{source}: expected 150 rows 'Idx Ratio Train Val Name' numbered 1..150.")
    return [row[4].split(",")[0].strip() for row in rows]


def build_coco_stuff_10k(source: str | Path, output: str | Path, overwrite: bool = False):
    """COCO-Stuff-10K from `cocostuff-10k-v1.1.zip` or its folder: the official 9,000 train / 1,000 test image lists
    (imageLists/), images/<name>.jpg, annotations/<name>.mat (variable S); 171 classes, 0 (unlabeled) -> 255."""
    output = _check_output(output, overwrite, source)
    src = _Source(source, "imageLists/train.txt", "COCO-Stuff-10K")
    used = sorted(COCO_STUFF_NAMES)
    names = [COCO_STUFF_NAMES[raw] for raw in used]
    splits = {}
    for split in ("train", "test"):
        list_name = f"imageLists/{split}.txt"
        if not src.has(list_name):
            raise DatasetLayoutError(f"COCO-Stuff-10K: {src.describe(list_name)} is missing.")
        stems = sorted({line.strip() for line in src.read(list_name).decode().splitlines() if line.strip()})
        missing = [f"images/{s}.jpg" for s in stems if not src.has(f"images/{s}.jpg")]
        missing += [f"annotations/{s}.mat" for s in stems if not src.has(f"annotations/{s}.mat")]
        if missing:
            raise DatasetLayoutError(f"COCO-Stuff-10K: {len(missing)} files of {list_name} are missing, e.g. "
                                     f"{', '.join(missing[:5])}.")
        splits[split] = [_Row(f"{s}.jpg", (lambda s=s: src.read(f"images/{s}.jpg")), (lambda s=s: _convert(
            _read_mat(src.read(f"annotations/{s}.mat"), "S", src.describe(f"annotations/{s}.mat")), "coco_stuff_10k",
            src.describe(f"annotations/{s}.mat")))) for s in stems]
    return _to_dataset_dict(splits, names, "coco_stuff_10k", dataset_card("coco_stuff_10k", names, splits), output)


def build_pascal_context_59(voc: str | Path, annotations: str | Path, output: str | Path, overwrite: bool = False):
    """PASCAL-Context-59 from VOC2010 (`VOCdevkit/VOC2010` folder or `VOCtrainval_03-May-2010.tar`) and the
    PASCAL-Context annotations (`trainval.tar.gz` or its folder: trainval/<id>.mat with LabelMap, labels.txt).

    Splits: `ImageSets/SegmentationContext/{train,val}.txt` when present (mmseg's lists, 4,996 / 5,104 images),
    else VOC2010's `ImageSets/Main/{train,val}.txt` restricted to annotated images (4,998 / 5,105)."""
    output = _check_output(output, overwrite, voc, annotations)
    with tempfile.TemporaryDirectory(prefix="ssa-hf-unpack-") as workdir:
        voc, annotations = Path(voc), Path(annotations)
        if voc.is_file() and tarfile.is_tarfile(voc):
            voc = _extract_tar(voc, Path(workdir))
        if annotations.is_file() and tarfile.is_tarfile(annotations):
            annotations = _extract_tar(annotations, Path(workdir))
        images = _Source(voc, "ImageSets/Main/train.txt", "VOC2010")
        labels = _PascalAnnotations(annotations)
        names = [PASCAL_CONTEXT_59[raw] for raw in sorted(PASCAL_CONTEXT_59)]
        context_lists = images.has("ImageSets/SegmentationContext/train.txt")
        splits = {}
        for split, list_stem in (("train", "train"), ("validation", "val")):
            list_name = (f"ImageSets/SegmentationContext/{list_stem}.txt" if context_lists
                         else f"ImageSets/Main/{list_stem}.txt")
            if not images.has(list_name):
                raise DatasetLayoutError(f"VOC2010: {images.describe(list_name)} is missing.")
            stems = sorted({line.split()[0] for line in images.read(list_name).decode().splitlines() if line.strip()})
            if not context_lists:
                stems = [s for s in stems if labels.has(s)]
            missing = [f"JPEGImages/{s}.jpg" for s in stems if not images.has(f"JPEGImages/{s}.jpg")]
            missing += [f"trainval/{s}.mat" for s in stems if not labels.has(s)]
            if missing:
                raise DatasetLayoutError(f"PASCAL-Context: {len(missing)} files of {list_name} are missing, e.g. "
                                         f"{', '.join(missing[:5])}.")
            splits[split] = [_Row(f"{s}.jpg", (lambda s=s: images.read(f"JPEGImages/{s}.jpg")), (lambda s=s: _convert(
                _read_mat(labels.read(s), "LabelMap", labels.describe(s)), "pascal_context_59", labels.describe(s)))) for s in stems]
        card = dataset_card("pascal_context_59", names, splits,
                            note=f"Split lists: {'ImageSets/SegmentationContext' if context_lists else 'ImageSets/Main'}.")
        return _to_dataset_dict(splits, names, "pascal_context_59", card, output)


class _PascalAnnotations:
    """trainval/<id>.mat files of the PASCAL-Context release; labels.txt, when present, must name the 59 classes at
    the ids of PASCAL_CONTEXT_59 (a guard against another label numbering)."""

    def __init__(self, path: Path):
        if not path.is_dir():
            raise DatasetLayoutError(f"PASCAL-Context annotations: {path} is neither a folder nor a tar archive.")
        root = path
        if not (root / "trainval").is_dir():
            candidates = sorted(p.parent for p in path.rglob("trainval") if p.is_dir())
            if not candidates:
                raise DatasetLayoutError(f"PASCAL-Context annotations: {path} has no trainval/ folder of .mat files.")
            root = candidates[0]
        self.folder = root / "trainval"
        self.stems = {p.stem for p in self.folder.glob("*.mat")}
        labels_file = next((p for p in (root / "labels.txt", root.parent / "labels.txt") if p.is_file()), None)
        if labels_file is not None:
            entries = {}
            for line in labels_file.read_text().splitlines():
                if ":" in line:
                    key, name = line.split(":", 1)
                    entries[int(key)] = name.strip()
            wrong = {k: (entries.get(k), v) for k, v in PASCAL_CONTEXT_59.items() if entries.get(k) != v}
            if wrong:
                raise DatasetLayoutError(f"{labels_file}: the 59 benchmark classes are not at the expected indices "
                                         f"(index: (found, expected)) {dict(list(wrong.items())[:5])}.")

    def has(self, stem: str) -> bool:
        return stem in self.stems

    def read(self, stem: str) -> bytes:
        return (self.folder / f"{stem}.mat").read_bytes()

    def describe(self, stem: str) -> str:
        return str(self.folder / f"{stem}.mat")


BUILDERS = {"ade20k": build_ade20k, "coco_stuff_10k": build_coco_stuff_10k,
            "pascal_context_59": build_pascal_context_59}

_DESCRIPTIONS = {
    "ade20k": ("ADE20K (SceneParse150)", "http://sceneparsing.csail.mit.edu/",
               "Raw mask value 0 (\"other\") is ignored (255); value k (1..150) becomes class k-1. Class names are "
               "the first synonym of each objectInfo150.txt entry.",
               "@inproceedings{zhou2017scene,\n  title={Scene Parsing through ADE20K Dataset},\n  author={Zhou, Bolei "
               "and Zhao, Hang and Puig, Xavier and Fidler, Sanja and Barriuso, Adela and Torralba, Antonio},\n  "
               "booktitle={CVPR},\n  year={2017}\n}", "bsd-3-clause"),
    "coco_stuff_10k": ("COCO-Stuff-10K (v1.1)", "https://github.com/nightrome/cocostuff10k",
                       "The 182 COCO-Stuff ids of the .mat annotations (variable S) minus the 11 unused thing ids "
                       f"{list(COCO_STUFF_UNUSED_IDS)} give 171 classes numbered 0..170 in id order; 0 (unlabeled) "
                       "and any unused id are ignored (255).",
                       "@inproceedings{caesar2018coco,\n  title={COCO-Stuff: Thing and Stuff Classes in Context},\n  "
                       "author={Caesar, Holger and Uijlings, Jasper and Ferrari, Vittorio},\n  booktitle={CVPR},\n"
                       "  year={2018}\n}", "cc-by-4.0"),
    "pascal_context_59": ("PASCAL-Context-59", "https://cs.stanford.edu/~roozbeh/pascal-context/",
                          "The 59 benchmark classes of the 459 PASCAL-Context labels (LabelMap of the .mat files) are "
                          "numbered 0..58 in label-index order; background, unlabeled and all other classes are "
                          "ignored (255).",
                          "@inproceedings{mottaghi2014role,\n  title={The Role of Context for Object Detection and "
                          "Semantic Segmentation in the Wild},\n  author={Mottaghi, Roozbeh and others},\n  "
                          "booktitle={CVPR},\n  year={2014}\n}", "other"),
}


def dataset_card(key: str, names: list[str], splits: dict[str, list], note: str = "") -> str:
    title, homepage, convention, citation, license_id = _DESCRIPTIONS[key]
    sizes = "\n".join(f"| {split} | {len(rows)} |" for split, rows in splits.items())
    classes = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
    return f"""---
license: {license_id}
task_categories:
- image-segmentation
tags:
- semantic-segmentation
- ssa-hf
pretty_name: {title}
---

# {title}, in the training convention

Converted from the official release ({homepage}) by `ssa-seg build-dataset {key}` of ssa-hf.

Columns: `image` (the original image file, not re-encoded), `annotation` (PNG; classes 0..{len(names) - 1},
255 = ignore), `classes` (the classes present in the annotation, as `ClassLabel`s).

| split | images |
|---|---|
{sizes}

## Label convention

{convention} {note}

Train directly with ssa-hf (no label conversion is applied to a dataset with a `classes` column):
`ssa-seg train --recipe {key} --data <this dataset> --output runs/{key}`.

## Classes

{classes}

## Citation

```bibtex
{citation}
```
"""


def push_dataset(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> None:
    """Upload a built dataset as parquet shards with its card."""
    import datasets
    from huggingface_hub import DatasetCard

    folder = Path(folder)
    datasets.load_from_disk(str(folder)).push_to_hub(repo_id, private=private, token=token)
    DatasetCard((folder / "README.md").read_text()).push_to_hub(repo_id, token=token)


__all__ = ["BUILDERS", "COCO_STUFF_NAMES", "COCO_STUFF_UNUSED_IDS", "DatasetLayoutError", "OFFICIAL_SIZES",
           "PASCAL_CONTEXT_59", "RAW_CONVENTIONS", "build_ade20k", "build_coco_stuff_10k", "build_pascal_context_59", "dataset_card",
           "push_dataset"]

"""Pictures of predictions: the class palette, an overlay with a legend of the classes present, the raw label PNG, and
a side-by-side sheet comparing models on the same images.

numpy and PIL drawing; the ignore index is the one of the label convention."""

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .model.image_processing_ssa import IGNORE_INDEX


def palette(num_classes: int) -> np.ndarray:
    """(K, 3) uint8 colours: the PASCAL VOC bit-interleaved palette from its second entry (its first is black, a poor
    colour for a real class), distinct for the first 255 classes."""
    colours = np.zeros((num_classes, 3), dtype=np.uint8)
    for index in range(min(num_classes, 255)):
        value, red, green, blue = index + 1, 0, 0, 0
        for shift in range(8):
            red |= ((value >> 0) & 1) << (7 - shift)
            green |= ((value >> 1) & 1) << (7 - shift)
            blue |= ((value >> 2) & 1) << (7 - shift)
            value >>= 3
        colours[index] = (red, green, blue)
    if num_classes > 255:  # beyond the palette: deterministic pseudo-random colours
        colours[255:] = np.random.default_rng(0).integers(0, 256, (num_classes - 255, 3), dtype=np.uint8)
    return colours


# Where fonts live on Linux, macOS and Windows; searched only when the default font lacks a class name's glyphs.
FONT_FOLDERS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts", "/Library/Fonts",
                "/System/Library/Fonts", "~/Library/Fonts", "C:/Windows/Fonts")
FONT_SIZE = 11


def _missing_glyphs(font, text: str) -> set[str]:
    """The characters of `text` that `font` draws as its "missing glyph" box (compared with a noncharacter's)."""
    def drawn(character: str):
        mask = font.getmask(character)
        return mask.size, bytes(mask)

    missing = drawn("\U0010ffff")
    return {c for c in set(text) if not c.isspace() and drawn(c) == missing}


@functools.lru_cache(maxsize=8)
def legend_font(text: str):
    """A font that draws every character of `text`: Pillow's default font when it can, else the first installed
    font file that can (DejaVu covers most alphabets; CJK needs e.g. Noto CJK or WenQuanYi). Returns (font, the
    characters no font found here can draw)."""
    default = ImageFont.load_default(size=FONT_SIZE)
    missing = _missing_glyphs(default, text)
    if not missing:
        return default, set()
    best = (default, missing)
    for path in _font_files():
        try:
            font = ImageFont.truetype(str(path), FONT_SIZE)
        except OSError:
            continue
        lacking = _missing_glyphs(font, text)
        if len(lacking) < len(best[1]):
            best = (font, lacking)
        if not lacking:
            break
    return best


def _font_files() -> list[Path]:
    folders = [Path(folder).expanduser() for folder in FONT_FOLDERS]
    try:
        import matplotlib

        folders.append(Path(matplotlib.get_data_path()) / "fonts" / "ttf")
    except ImportError:
        pass
    files = [path for folder in folders if folder.is_dir() for path in sorted(folder.rglob("*"))
             if path.suffix.lower() in (".ttf", ".otf", ".ttc")]
    # Sans-serif regular faces first: the legend's look when several fonts could draw it.
    styles = ("bold", "italic", "oblique", "mono", "light", "condensed", "narrow")
    return sorted(files, key=lambda p: ("sans" not in p.name.lower(), any(w in p.name.lower() for w in styles)))


def overlay_with_legend(image, label_map: np.ndarray, id2label: dict[int, str], alpha: float = 0.5,
                        max_legend_rows: int = 24, undrawable: list | None = None):
    """The image blended with the class colours, and a legend panel (colour, name, pixel share) of the classes
    present, largest first. Names are drawn with a font that has their glyphs (`legend_font`); the names no font
    here can draw are appended to `undrawable` when given."""
    colours = palette(max(len(id2label), int(label_map.max()) + 1))
    rgb = np.asarray(image, dtype=np.float32)
    blended = (1 - alpha) * rgb + alpha * colours[label_map].astype(np.float32)
    blended = Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))

    classes, counts = np.unique(label_map, return_counts=True)
    order = np.argsort(-counts)
    rows = [(int(classes[i]), counts[i] / label_map.size) for i in order]
    shown = rows[:max_legend_rows]
    row_height, swatch = 18, 14
    lines = [f"{id2label.get(k, str(k))} ({100 * share:.1f}%)" for k, share in shown]
    if len(rows) > len(shown):
        lines.append(f"+{len(rows) - len(shown)} more classes")
    font, missing = legend_font("".join(sorted(set("".join(lines)))))
    if undrawable is not None and missing:
        undrawable += [id2label.get(k, str(k)) for k, _ in shown if missing & set(id2label.get(k, str(k)))]
    text_width = max(int(ImageDraw.Draw(blended).textlength(line, font=font)) for line in lines)
    panel_width = swatch + 16 + text_width
    height = max(blended.height, row_height * len(lines) + 8)
    canvas = Image.new("RGB", (blended.width + panel_width, height), (255, 255, 255))
    canvas.paste(blended, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, line in enumerate(lines):
        top = 4 + row * row_height
        if row < len(shown):
            draw.rectangle([blended.width + 4, top + 2, blended.width + 4 + swatch, top + 2 + swatch],
                           fill=tuple(int(c) for c in colours[shown[row][0]]), outline=(0, 0, 0))
        draw.text((blended.width + swatch + 10, top + 3), line, fill=(0, 0, 0), font=font)
    return canvas


def label_image(label_map: np.ndarray, num_labels: int):
    """Raw class indices as a PNG-able image: 8-bit for up to 256 classes, else 16-bit."""
    if num_labels <= 256:
        return Image.fromarray(label_map.astype(np.uint8), mode="L")
    return Image.fromarray(label_map.astype(np.uint16))

def colourise(labels: np.ndarray, palette: list, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(H, W) labels -> (H, W, 3) uint8 colours of `palette`; the ignore value and any label beyond the palette are
    black."""
    labels = np.asarray(labels, dtype=np.int64)
    table = np.zeros((max(len(palette), ignore_index + 1, int(labels.max(initial=0)) + 1), 3), np.uint8)
    table[: len(palette)] = palette
    table[ignore_index] = (0, 0, 0)
    return table[labels]


# Distinct colours for label maps (the scenes' own palette is too close to their textures to read masks by).
MASK_PALETTE = [(0, 190, 255), (230, 90, 20), (20, 110, 30), (150, 60, 170), (190, 240, 40), (20, 40, 200),
                (255, 220, 0), (255, 0, 120), (0, 230, 180), (120, 120, 120), (250, 170, 200)]


def comparison_sheet(rows: list, names: list[str], palette: list, path: Path,
                     columns: tuple[str, ...] = ("image", "ground truth", "SSA", "SegFormer"),
                     ignore_index: int = IGNORE_INDEX) -> None:
    """One row per image: the image, then one label map per further column (black = ignored), plus a legend of the
    ground truth's classes. `rows`: tuples (image (H, W, 3), ground truth, prediction, ...) of equal sizes."""
    height, width = rows[0][0].shape[:2]
    header, legend_height = 18, 22
    sheet = Image.new("RGB", (len(columns) * width, header + len(rows) * height + legend_height), "white")
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(columns):
        draw.text((c * width + 4, 3), title, fill="black")
    for r, (image, *label_maps) in enumerate(rows):
        tiles = [image] + [colourise(m, palette, ignore_index) for m in label_maps]
        for c, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(tile), (c * width, header + r * height))
    present = sorted({int(v) for _, truth, *_ in rows for v in np.unique(truth) if v != ignore_index})
    x = 4
    for k in present:
        draw.rectangle([x, sheet.height - 16, x + 12, sheet.height - 4], fill=tuple(palette[k]))
        draw.text((x + 16, sheet.height - 17), names[k], fill="black")
        x += 22 + 7 * len(names[k])
    sheet.save(path)



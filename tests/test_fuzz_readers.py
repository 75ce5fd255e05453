"""Hostile and broken inputs: every reader of a user's file, fed seeded mutations of a valid file
(bit flips, truncation, inserted bytes, deleted ranges, a field replaced by a hostile value) and a few crafted
attacks (XML entity expansion and external entities, deep JSON nesting, a huge declared image size), ends each case
in a valid result or in our error: exactly ``ValueError`` or ``FileNotFoundError`` (not a subclass such as
``UnicodeDecodeError`` or ``json.JSONDecodeError``) with a message naming the file. Anything else, a dependency's
exception, an invalid result or a case running past :data:`CASE_SECONDS`, is "escaped"; each test asserts none.

``experiments/fuzz_readers.py`` runs the same harness (more cases if asked) and prints the table in docs/api.md
(*Hostile input*)."""
from __future__ import annotations

import io
import json
import math
import signal
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

from midlevel_fast import AdaptationHead, HeadInfo, load_head, load_image, save_head
from midlevel_fast.cli.boxes import read_boxes_file
from midlevel_fast.datasets.coco import coco_samples
from midlevel_fast.datasets.tags import list_tags
from midlevel_fast.datasets.voc import VOC_CLASSES, read_annotation, read_split
from tests.test_image_io import png_declaring

# Mutated cases per reader in the test suite: the whole file runs in about 3 s on 2 cores.
CASES_PER_READER = 150
# A case running longer than this counts as a hang (escaped).
CASE_SECONDS = 5
SEED = 26

OUR_ERRORS = (ValueError, FileNotFoundError)
HOSTILE_VALUES = [b"nan", b"inf", b"-inf", b"1e400", b"-1", b"0", b"", b"abc", b"99999999999999999999", b"\x00",
                  b"\xff\xfe", b"&lol;", b"\"", b"[", b"{", b"<", b"1" * 5000, "é".encode()]


@dataclass
class Reader:
    """One reader under fuzzing: ``valid(folder)`` writes a valid input and returns its path; ``read(path)`` reads
    it; ``ok(result, path)`` says whether a result is valid; ``crafted(folder)`` writes the hand-made attacks."""

    name: str
    valid: Callable[[Path], Path]
    read: Callable[[Path], Any]
    ok: Callable[[Any, Path], bool]
    crafted: Callable[[Path], list[Path]]


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One seeded mutation of ``data``: bit flips, truncation, inserted bytes, a deleted range or a number/word
    replaced by a hostile value."""
    kind = int(rng.integers(5))
    n = len(data)
    if kind == 0:
        out = bytearray(data)
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(n))
            out[i] ^= 1 << int(rng.integers(8))
        return bytes(out)
    if kind == 1:
        return data[: int(rng.integers(n))]
    if kind == 2:
        i = int(rng.integers(n + 1))
        return data[:i] + rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes() + data[i:]
    if kind == 3:
        i = int(rng.integers(n))
        return data[:i] + data[i + int(rng.integers(1, 65)):]
    # Replace one run of digits or letters (a field's value or name) by a hostile value.
    starts = [i for i in range(n) if chr(data[i]).isalnum() and (i == 0 or not chr(data[i - 1]).isalnum())]
    if not starts:
        return data
    i = starts[int(rng.integers(len(starts)))]
    j = i
    while j < n and chr(data[j]).isalnum():
        j += 1
    return data[:i] + HOSTILE_VALUES[int(rng.integers(len(HOSTILE_VALUES)))] + data[j:]


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


def classify(reader: Reader, path: Path) -> tuple[str, str]:
    """``("correct" | "our error" | "escaped", detail)`` of one case."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        result = reader.read(path)
    except _Hang:
        return "escaped", f"ran past {CASE_SECONDS} s"
    except OUR_ERRORS as e:
        if type(e) not in OUR_ERRORS:
            return "escaped", f"{type(e).__name__}: {e}"
        if path.name not in str(e):
            return "escaped", f"{type(e).__name__} not naming the file: {e}"
        return "our error", str(e)
    except Exception as e:  # noqa: BLE001 - counting what escapes is the point
        return "escaped", f"{type(e).__name__}: {e}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return ("correct", "") if reader.ok(result, path) else ("escaped", f"invalid result {result!r:.200}")


def run_reader(reader: Reader, folder: Path, cases: int, seed: int = SEED) -> tuple[Counter, list[str]]:
    """Counts of the outcomes over ``cases`` mutations of the valid input plus the crafted attacks, and the
    escaped cases' descriptions."""
    rng = np.random.default_rng(seed)
    valid = reader.valid(folder)
    original = valid.read_bytes()
    counts, escaped = Counter(), []
    for case in range(cases):
        valid.write_bytes(mutate(original, rng))
        outcome, detail = classify(reader, valid)
        counts[outcome] += 1
        if outcome == "escaped":
            escaped.append(f"case {case}: {detail}")
    valid.write_bytes(original)
    for path in reader.crafted(folder):
        outcome, detail = classify(reader, path)
        counts[outcome] += 1
        if outcome == "escaped":
            escaped.append(f"{path.name}: {detail}")
    return counts, escaped


# --- images ---------------------------------------------------------------------------------------------------

def _image_valid(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    path = folder / "photo.jpg"
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path, quality=90)
    return path


def _image_crafted(folder: Path) -> list[Path]:
    png = io.BytesIO()
    Image.new("L", (8, 8)).save(png, format="PNG")
    cases = [png_declaring(folder / "bomb.png", 60000, 60000), folder / "empty.jpg", folder / "png_named.jpg",
             folder / "text.png", folder / "zero_size.png"]
    cases[1].write_bytes(b"")
    cases[2].write_bytes(png.getvalue())
    cases[3].write_bytes(b"hello, not an image")
    png_declaring(cases[4], 0, 0)
    for mode in ("1", "P", "I", "F", "CMYK", "LAB", "HSV", "I;16"):
        path = folder / f"mode_{mode.replace(';', '_')}.tiff"
        try:
            Image.new(mode, (4, 4)).save(path)
        except (OSError, ValueError, KeyError):  # a mode TIFF cannot hold: nothing to test
            continue
        cases.append(path)
    return cases


def _image_ok(result: Any, path: Path) -> bool:
    return (isinstance(result, np.ndarray) and result.dtype == np.uint8 and result.ndim == 3
            and result.shape[2] == 3 and min(result.shape[:2]) >= 1)


IMAGES = Reader("image files (load_image)", _image_valid, load_image, _image_ok, _image_crafted)


# --- VOC XML --------------------------------------------------------------------------------------------------

VOC_XML = """<annotation>
  <folder>VOC2012</folder><filename>x.jpg</filename>
  <size><width>32</width><height>24</height><depth>3</depth></size>
  <object><name>cat</name><truncated>0</truncated><difficult>0</difficult>
    <bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax><ymax>18</ymax></bndbox></object>
  <object><name>dog</name><truncated>1</truncated><difficult>1</difficult>
    <bndbox><xmin>10.5</xmin><ymin>1</ymin><xmax>32</xmax><ymax>24</ymax></bndbox></object>
</annotation>
"""
BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol">""" + "".join(
    f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">' for i in range(1, 10)) + """]>
<annotation><size><width>32</width><height>24</height></size>
<object><name>&lol9;</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>
</annotation>
"""
EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<annotation><size><width>32</width><height>24</height></size>
<object><name>&secret;</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>
</annotation>
"""


def _voc_root(folder: Path) -> Path:
    root = folder / "VOC"
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(exist_ok=True)
    if not (root / "JPEGImages" / "x.jpg").exists():
        Image.new("RGB", (32, 24)).save(root / "JPEGImages" / "x.jpg")
    return root


def _voc_valid(folder: Path) -> Path:
    path = _voc_root(folder) / "Annotations" / "x.xml"
    path.write_text(VOC_XML)
    return path


def _voc_read(path: Path) -> Any:
    # The crafted files are annotations of x.jpg too: link the image under their id.
    jpeg = path.parent.parent / "JPEGImages" / f"{path.stem}.jpg"
    if not jpeg.exists():
        jpeg.write_bytes((path.parent.parent / "JPEGImages" / "x.jpg").read_bytes())
    return read_annotation(path.parent.parent, path.stem)


def _voc_crafted(folder: Path) -> list[Path]:
    annotations = _voc_root(folder) / "Annotations"
    cases = {"laughs": BILLION_LAUGHS, "external": EXTERNAL_ENTITY,
             "unknown_encoding": '<?xml version="1.0" encoding="x-nonsense"?>' + VOC_XML,
             "huge_size": VOC_XML.replace("<width>32</width>", "<width>1e400</width>"),
             "deep": "<annotation>" + "<a>" * 100_000 + "</a>" * 100_000 + "</annotation>"}
    # No <size>, so the size is read from the image, which is corrupt.
    cases["no_size_bad_jpeg"] = VOC_XML.replace("<width>32</width><height>24</height>", "")
    (annotations.parent / "JPEGImages" / "no_size_bad_jpeg.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    for name, text in cases.items():
        (annotations / f"{name}.xml").write_text(text)
    return [annotations / f"{name}.xml" for name in cases]


def _voc_ok(result: Any, path: Path) -> bool:
    return result.width > 0 and result.height > 0 and all(
        o.name in VOC_CLASSES and all(math.isfinite(v) for v in o.box)
        and 0 <= o.box[0] < o.box[2] <= result.width and 0 <= o.box[1] < o.box[3] <= result.height
        for o in result.objects)


VOC = Reader("VOC XML (read_annotation)", _voc_valid, _voc_read, _voc_ok, _voc_crafted)


def _split_valid(folder: Path) -> Path:
    path = _voc_root(folder) / "ImageSets" / "Main" / "train.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("2008_000008\n2008_000015  1\n\n2008_000019 -1\n")
    return path


def _split_ok(result: Any, path: Path) -> bool:
    # The independent reading of the rules: first token of each non-blank line, in order, none twice.
    expected = [line.split()[0] for line in path.read_bytes().decode().splitlines() if line.strip()]
    return result == expected and len(set(result)) == len(result)


def _split_crafted(folder: Path) -> list[Path]:
    latin = _split_valid(folder).parent / "latin1.txt"
    latin.write_bytes(b"caf\xe9\n")
    return [latin]


SPLITS = Reader("VOC split lists (read_split)", _split_valid,
                lambda path: read_split(path.parent.parent.parent, path.stem), _split_ok, _split_crafted)


# --- JSON box lists, COCO, tag lists ---------------------------------------------------------------------------

def _deep_json(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text("[" * 100_000 + "]" * 100_000)
    return path


def _boxes_valid(folder: Path) -> Path:
    path = folder / "boxes.json"
    path.write_text(json.dumps([[1, 2, 30, 20], {"box": [0.5, 1.5, 12, 14], "score": 0.9}]))
    return path


def _boxes_ok(result: Any, path: Path) -> bool:
    return bool(result) and all(len(b) == 4 and all(isinstance(v, float) and math.isfinite(v) for v in b)
                                for b in result)


def _boxes_crafted(folder: Path) -> list[Path]:
    nan = folder / "nan_boxes.json"
    nan.write_text("[[NaN, 0, 1, 1]]")
    huge = folder / "huge_int_boxes.json"
    huge.write_text("[[" + "9" * 400 + ", 0, 1, 1]]")
    latin = folder / "latin1_boxes.json"
    latin.write_bytes(b'[{"box": [1, 2, 3, 4], "label": "caf\xe9"}]')
    return [_deep_json(folder, "deep_boxes.json"), nan, huge, latin]


BOXES = Reader("box lists (read_boxes_file)", _boxes_valid, read_boxes_file, _boxes_ok, _boxes_crafted)


def _coco_valid(folder: Path) -> Path:
    Image.new("RGB", (32, 24)).save(folder / "a.jpg")
    path = folder / "coco.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 32, "height": 24}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 4, "name": "dog"}],
        "annotations": [{"image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 12], "iscrowd": 0},
                        {"image_id": 1, "category_id": 4, "bbox": [5.5, 0, 20, 24]}]}))
    return path


def _coco_crafted(folder: Path) -> list[Path]:
    nan = folder / "nan_coco.json"
    nan.write_text(_coco_valid(folder).read_text().replace("[1, 2, 10, 12]", "[NaN, 2, 10, 12]"))
    long_name = folder / "long_name_coco.json"
    long_name.write_text(_coco_valid(folder).read_text().replace('"a.jpg"', '"a.' + "1" * 5000 + '"'))
    return [_deep_json(folder, "deep_coco.json"), nan, long_name]


def _coco_ok(result: Any, path: Path) -> bool:
    samples, classes = result
    return bool(samples) and all(
        s.label in classes and all(math.isfinite(v) for v in s.box)
        and 0 <= s.box[0] < s.box[2] <= 32 and 0 <= s.box[1] < s.box[3] <= 24 for s in samples)


COCO = Reader("COCO JSON (coco_samples)", _coco_valid, coco_samples, _coco_ok, _coco_crafted)


def _tags_images(folder: Path) -> None:
    for name in ("a.jpg", "b.jpg"):
        if not (folder / name).exists():
            Image.fromarray(np.full((8, 8, 3), ord(name[0]), np.uint8)).save(folder / name)


def _tags_csv_valid(folder: Path) -> Path:
    _tags_images(folder)
    path = folder / "tags.csv"
    path.write_text("path,labels\na.jpg,cat;dog\nb.jpg,dog\n")
    return path


def _tags_json_valid(folder: Path) -> Path:
    _tags_images(folder)
    path = folder / "tags.json"
    path.write_text(json.dumps([{"path": "a.jpg", "labels": ["cat", "dog"]}, {"path": "b.jpg", "labels": ["dog"]}]))
    return path


def _tags_ok(result: Any, path: Path) -> bool:
    images, classes = result
    return bool(images) and all(img.path.is_file() and img.tags and all(t and t in classes for t in img.tags)
                                for img in images)


def _tags_crafted(folder: Path) -> list[Path]:
    _tags_images(folder)
    latin = folder / "latin1_tags.csv"
    latin.write_bytes(b"a.jpg,caf\xe9\n")
    nul = folder / "nul_tags.csv"
    nul.write_bytes(b"a.jpg\x00,cat\n")
    long_name = folder / "long_name_tags.csv"
    long_name.write_text("b." + "1" * 5000 + ",cat\n")
    return [_deep_json(folder, "deep_tags.json"), latin, nul, long_name]


TAGS_CSV = Reader("CSV tag lists (list_tags)", _tags_csv_valid, list_tags, _tags_ok, _tags_crafted)
def _tags_json_crafted(folder: Path) -> list[Path]:
    empty_label = folder / "empty_label_tags.json"
    empty_label.write_text(json.dumps([{"path": "a.jpg", "labels": ["", "dog"]}]))
    return [empty_label]


TAGS_JSON = Reader("JSON tag lists (list_tags)", _tags_json_valid, list_tags, _tags_ok, _tags_json_crafted)


# --- head files -----------------------------------------------------------------------------------------------

def _head_valid(folder: Path) -> Path:
    torch.manual_seed(0)
    info = HeadInfo(backbone="efficientnet_lite0", class_names=["cat", "dog"], layers=2, hidden=4)
    head = AdaptationHead(8, info.num_outputs, layers=2, hidden=4, dropout=0.0).eval()
    path = folder / "head.safetensors"
    save_head(path, head, info)
    return path


def _head_ok(result: Any, path: Path) -> bool:
    head, info = result
    positive = [info.k, info.grid_step, *info.scales]
    return (info.class_names and all(isinstance(c, str) and c for c in info.class_names) and info.scales
            and all(type(v) in (int, float) and math.isfinite(v) and v > 0 for v in positive)
            and isinstance(info.extra, dict) and head(torch.zeros(1, head.in_dim)).shape == (1, info.num_outputs))


def _head_crafted(folder: Path) -> list[Path]:
    valid = _head_valid(folder).read_bytes()
    (header_size,) = struct.unpack("<Q", valid[:8])
    header = json.loads(valid[8:8 + header_size])
    cases = {}

    def with_header(change: Callable[[dict], None]) -> bytes:
        h = json.loads(json.dumps(header))
        change(h)
        text = json.dumps(h).encode()
        return struct.pack("<Q", len(text)) + text + valid[8 + header_size:]

    first = next(k for k in header if k != "__metadata__")
    cases["wrong_shape"] = with_header(lambda h: h[first].update(shape=[h[first]["shape"][0] * 2, 1]))
    cases["wrong_dtype"] = with_header(lambda h: h[first].update(dtype="I8"))
    cases["no_metadata"] = with_header(lambda h: h.pop("__metadata__"))
    cases["hostile_metadata"] = with_header(lambda h: h["__metadata__"].update(
        class_names='"cat"', in_dim="-5", layers="1e400", scales="[" * 50_000))
    cases["header_size_huge"] = struct.pack("<Q", 2**63) + valid[8:]
    cases["truncated"] = valid[: len(valid) // 2]
    cases["not_safetensors"] = b"PK\x03\x04 a zip, not a head"
    for name, data in cases.items():
        (folder / f"{name}.safetensors").write_bytes(data)
    # Metadata that parses as JSON of the wrong kind: loaded silently before load_head checked the kinds.
    wrong_kinds = {"class_names": "[1, 2]", "k": "NaN", "scales": "{}", "grid_step": "0", "extra": "[]"}
    for entry, value in wrong_kinds.items():
        def set_entry(h: dict, entry: str = entry, value: str = value) -> None:
            h["__metadata__"].update({entry: value})
        cases[f"meta_{entry}"] = with_header(set_entry)
        (folder / f"meta_{entry}.safetensors").write_bytes(cases[f"meta_{entry}"])
    return [folder / f"{name}.safetensors" for name in cases]


HEADS = Reader("head files (load_head)", _head_valid, load_head, _head_ok, _head_crafted)

READERS = [IMAGES, VOC, SPLITS, BOXES, COCO, TAGS_CSV, TAGS_JSON, HEADS]


@pytest.mark.parametrize("reader", READERS, ids=[r.name.split(" (")[0] for r in READERS])
def test_no_case_escapes(reader, tmp_path):
    counts, escaped = run_reader(reader, tmp_path, CASES_PER_READER)
    assert counts["correct"] + counts["our error"] > 0
    assert not escaped, "\n".join(escaped[:20])

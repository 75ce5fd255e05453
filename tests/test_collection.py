"""Scoring a collection: corrupt files, resume after kill -9, torn part lines, and sharding over 2 torchrun ranks."""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from midlevel_fast.scaleout.collection import score_collection
from midlevel_fast.scaleout.results import read_part, read_rows
from midlevel_fast.scaleout.rows import collection_row
from midlevel_fast.scoring.detections import Detection
from tests.distributed_worker import tiny_model, write_images
from tests.helpers import worker_command
from tests.test_overlay import made_result


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def torchrun(*args: str, cwd) -> subprocess.Popen:
    """Starts tests/distributed_worker.py on 2 local CPU ranks, logging to ``cwd/torchrun.log`` (a file, not a
    pipe: the DataLoader worker of a killed rank keeps a pipe open for seconds after its parent died)."""
    cmd, env = worker_command(*args)
    with open(cwd / "torchrun.log", "w") as log:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, cwd: Path, timeout: float = 120) -> None:
    assert proc.wait(timeout=timeout) == 0, (cwd / "torchrun.log").read_text()[-4000:]


def paths(rows):
    return [r["path"] for r in rows]


def test_corrupt_image_in_the_middle_is_logged_skipped_and_retried(tmp_path, model, caplog):
    images = write_images(tmp_path / "images", 9, corrupt=(4,))
    out = tmp_path / "scores.jsonl"
    with caplog.at_level(logging.WARNING, logger="midlevel_fast.scaleout.collection"):
        res = score_collection(tmp_path / "images", out, model, top=3, num_workers=1, progress=False)
    assert (res.scored, res.failed, res.rows, res.errors) == (8, 1, 8, 1)
    assert any("skipped im04.png" in r.getMessage() and "cannot decode" in r.getMessage() for r in caplog.records)
    rows = read_rows(out)
    assert paths(rows) == [f"im{i:02d}.png" for i in range(9) if i != 4]
    assert all(len(r["classes"]) == 3 and r["width"] == 56 and r["height"] == 40 + int(r["path"][2:4]) for r in rows)
    errors = read_rows(tmp_path / "scores.errors.jsonl")
    assert paths(errors) == ["im04.png"] and "im04.png" in errors[0]["error"]
    assert not (tmp_path / "scores.jsonl.parts").exists()

    again = score_collection(tmp_path / "images", out, model, top=3, num_workers=0, progress=False)
    assert (again.scored, again.resumed, again.failed) == (0, 8, 1)  # failures are retried, successes kept
    write_images(tmp_path / "fixed", 5)[4].replace(images[4])
    healed = score_collection(tmp_path / "images", out, model, top=3, num_workers=0, progress=False)
    assert (healed.scored, healed.rows, healed.errors) == (1, 9, 0)
    assert not (tmp_path / "scores.errors.jsonl").exists()
    with pytest.raises(ValueError, match=r"other settings \(recorded, requested\): \{'k': \(5.0, 1.0\)\}"):
        score_collection(tmp_path / "images", out, model, k=1.0, progress=False)


def test_torn_lines_and_duplicates_never_survive_the_merge(tmp_path, model, caplog):
    write_images(tmp_path / "images", 6)
    out = tmp_path / "scores.jsonl"
    score_collection(tmp_path / "images", out, model, num_workers=0, progress=False)
    full = read_rows(out)
    # The state a killed 2-rank run leaves: some rows merged, some in parts (with duplicates), a torn line, garbage.
    line = [json.dumps(r) + "\n" for r in full]
    out.write_text("".join(line[:3]))
    parts = tmp_path / "scores.jsonl.parts"
    parts.mkdir()
    (parts / "rank00000.jsonl").write_text(line[3] + line[4] + line[5][:25])
    (parts / "rank00001.jsonl").write_text(line[3] + "\0\0\0\n" + line[1])
    with caplog.at_level(logging.WARNING, logger="midlevel_fast.scaleout.collection"):
        res = score_collection(tmp_path / "images", out, model, num_workers=0, progress=False)
    assert (res.scored, res.resumed, res.rows) == (1, 5, 6)
    assert any("truncated last line" in r.getMessage() for r in caplog.records)
    rows = read_rows(out)
    assert paths(rows) == paths(full)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in full]
    assert not parts.exists()


def test_bad_arguments_are_refused_before_scoring(tmp_path, model):
    with pytest.raises(ValueError, match="suffix"):
        score_collection(tmp_path, tmp_path / "scores.csv", model)
    with pytest.raises(ValueError, match="mode must be one of .*got 'fast'"):
        score_collection(tmp_path, tmp_path / "scores.jsonl", model, mode="fast")
    with pytest.raises(ValueError, match="top >= 1"):
        score_collection(tmp_path, tmp_path / "scores.jsonl", model, top=0)
    with pytest.raises(NotADirectoryError, match="not a directory"):
        score_collection(tmp_path / "nope", tmp_path / "scores.jsonl", model)


def test_parquet_needs_pyarrow(tmp_path, model):
    if importlib.util.find_spec("pyarrow") is None:
        with pytest.raises(ImportError, match=r"midlevel_fast\[parquet\]"):
            score_collection(tmp_path, tmp_path / "scores.parquet", model)
        return
    write_images(tmp_path / "images", 3, corrupt=(1,))
    res = score_collection(tmp_path / "images", tmp_path / "scores.parquet", model, full_scores=True, progress=False)
    rows = read_rows(tmp_path / "scores.parquet")
    assert (res.rows, paths(rows)) == (2, ["im00.png", "im02.png"])
    names = json.loads((tmp_path / "scores.meta.json").read_text())["class_names"]
    assert len(rows[0]["scores"]) == len(names) == 1000
    assert rows[0]["scores"][names.index(rows[0]["classes"][0]["class"])] == rows[0]["classes"][0]["score"]
    again = score_collection(tmp_path / "images", tmp_path / "scores.parquet", model, progress=False)
    assert (again.scored, again.resumed) == (0, 2)


def test_sharded_over_two_ranks_every_image_once(tmp_path, model):
    images = tmp_path / "images"
    write_images(images, 9, corrupt=(4,))
    finish(torchrun("score", str(images), str(tmp_path / "scores.jsonl"), str(tmp_path), cwd=tmp_path), tmp_path)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    shards = [set(r["shard"]) for r in reports]
    everything = {f"im{i:02d}.png" for i in range(9)}
    assert not shards[0] & shards[1] and shards[0] | shards[1] == everything
    assert [r["scored"] + r["failed"] for r in reports] == [len(s) for s in shards]
    assert reports[0]["rows"] == 8 and reports[1]["rows"] is None  # rank 0 merged
    rows = read_rows(tmp_path / "scores.jsonl")
    assert paths(rows) == sorted(everything - {"im04.png"})
    assert paths(read_rows(tmp_path / "scores.errors.jsonl")) == ["im04.png"]
    single = score_collection(images, tmp_path / "single.jsonl", model, top=3, num_workers=0, progress=False)
    assert single.rows == 8
    for a, b in zip(rows, read_rows(tmp_path / "single.jsonl")):
        assert [t["class"] for t in a["classes"]] == [t["class"] for t in b["classes"]]
        assert [t["score"] for t in a["classes"]] == pytest.approx([t["score"] for t in b["classes"]], rel=1e-5)


def test_resume_after_a_killed_rank(tmp_path):
    images = tmp_path / "images"
    write_images(images, 12)
    out = tmp_path / "scores.jsonl"
    proc = torchrun("score", str(images), str(out), str(tmp_path), "--slow", "0.3", cwd=tmp_path)
    part1 = tmp_path / "scores.jsonl.parts" / "rank00001.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and not (part1.exists() and len(list(read_part(part1))) >= 2):
        time.sleep(0.05)
    os.kill(int((tmp_path / "pid1").read_text()), signal.SIGKILL)
    assert proc.wait(timeout=90) != 0 and not out.exists(), (tmp_path / "torchrun.log").read_text()[-3000:]
    done = {r["path"] for part in part1.parent.glob("rank*.jsonl") for r in read_part(part)}
    assert 2 <= len(done) < 12, "the run was not interrupted mid-way"

    finish(torchrun("score", str(images), str(out), str(tmp_path), cwd=tmp_path), tmp_path)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert sum(r["scored"] for r in reports) == 12 - len(done)  # nothing scored twice, nothing lost
    assert sum(r["resumed"] for r in reports) == len(done)
    assert paths(read_rows(out)) == [f"im{i:02d}.png" for i in range(12)]
    assert out.read_text().count("\n") == 12



def test_rows_have_presence_points_and_detections(tmp_path, model):
    write_images(tmp_path / "images", 2)
    out = tmp_path / "scores.jsonl"
    score_collection(tmp_path / "images", out, model, top=3, num_workers=0, progress=False)
    for row in read_rows(out):
        assert set(row) == {"path", "width", "height", "mode", "k", "backbone", "detection_threshold", "patches",
                            "classes", "detections", "seconds"}
        assert len(row["classes"]) == 3
        assert all(set(c) == {"class", "score", "presence", "point"} for c in row["classes"])
        assert all(c["presence"] is None for c in row["classes"])  # the ImageNet head has no calibration
        # A point for every class of the row (maps are made for them even without maps_dir), in the image.
        assert all(0 <= c["point"][0] <= row["width"] and 0 <= c["point"][1] <= row["height"] for c in row["classes"])
        # The ImageNet head has no box regression: its detections are windows, inside the image, best first.
        scores = [d["score"] for d in row["detections"]]
        assert scores == sorted(scores, reverse=True) and all(s >= row["detection_threshold"] for s in scores)
        assert all(0 <= d["box"][0] < d["box"][2] <= row["width"] and 0 <= d["box"][1] < d["box"][3] <= row["height"]
                   for d in row["detections"])


def test_rows_of_an_older_output_resume_in_the_current_schema(tmp_path, model):
    """An output whose rows have ``top`` with ``presence`` and ``points`` beside it (the schema before ``classes``)
    resumes with the same settings: its rows are kept, not scored again, and merged in the current schema."""
    write_images(tmp_path / "images", 3)
    out = tmp_path / "scores.jsonl"
    score_collection(tmp_path / "images", out, model, top=2, num_workers=0, progress=False)
    new = read_rows(out)

    def older(row: dict) -> dict:
        rest = {k: v for k, v in row.items() if k != "classes"}
        return {**rest, "top": [{"class": c["class"], "score": c["score"]} for c in row["classes"]],
                "presence": None, "points": {c["class"]: c["point"] for c in row["classes"]}}

    out.write_text("".join(json.dumps(older(r)) + "\n" for r in new[:2]))
    res = score_collection(tmp_path / "images", out, model, top=2, num_workers=0, progress=False)
    assert (res.scored, res.resumed, res.rows) == (1, 2, 3)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in read_rows(out)] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in new]


def test_row_of_a_calibrated_result_maps_the_present_classes(tmp_path):
    det = [Detection("cat", 0.875, (1.0, 2.25, 30.0, 40.0))]
    res = made_result(presence=[0.97, 0.2, 0.6], detections=det)
    image = np.full((60, 80, 3), 128, np.uint8)
    row = collection_row("sub/img.jpg", res, {"mode": "dense"}, 2, False, tmp_path, image)
    assert row["classes"] == [{"class": "dog", "score": pytest.approx(2.5e-2), "presence": pytest.approx(0.2),
                               "point": [20.5, 30.5]},
                              {"class": "cat", "score": pytest.approx(3.9e-3), "presence": pytest.approx(0.97),
                               "point": [60.5, 15.5]}]
    assert row["detections"] == [{"class": "cat", "score": 0.875, "box": [1.0, 2.25, 30.0, 40.0]}]
    # The present classes among the maps, ranked by score: cat (2nd by score), bus (3rd); not dog.
    assert row["maps"] == ["sub__img_1_cat.png", "sub__img_2_bus.png"]
    assert all((tmp_path / name).is_file() for name in row["maps"])
    assert collection_row("a.png", res, {}, 2, False, tmp_path, image, stem="a.png")["maps"][0] == "a.png_1_cat.png"
    plain = collection_row("img.jpg", made_result(), {}, 2, True, tmp_path, image)
    assert all(c["presence"] is None for c in plain["classes"]) and plain["maps"] == ["img_1_dog.png"]
    assert len(plain["scores"]) == 3


def test_images_differing_only_by_suffix_get_their_own_maps(tmp_path, model):
    folder = tmp_path / "images"
    write_images(folder, 1)
    png = next(folder.glob("*.png"))
    Image.open(png).save(png.with_suffix(".bmp"))
    score_collection(folder, tmp_path / "s.jsonl", model, top=1, maps_dir=tmp_path / "maps", num_workers=0,
                     progress=False)
    maps = [m for row in read_rows(tmp_path / "s.jsonl") for m in row["maps"]]
    assert len(maps) == 2 and len(set(maps)) == 2 and {m.split("_1_")[0] for m in maps} == {png.name, png.stem + ".bmp"}
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == sorted(maps)


def test_images_scored_in_chunks_give_the_same_rows(tmp_path, model, caplog):
    """batch_images=3 (score_images over chunks, the GPU default's path) writes the rows of one-by-one scoring; a
    chunk holding an image too small to score falls back to one by one, and only that image is refused."""
    write_images(tmp_path / "images", 7, corrupt=(2,))
    # Below 7 px: too small for the tiny model (one scale), refused.
    Image.fromarray(np.zeros((5, 60, 3), np.uint8)).save(tmp_path / "images" / "im03b.png")
    one = score_collection(tmp_path / "images", tmp_path / "one.jsonl", model, top=3, num_workers=0, progress=False)
    with caplog.at_level(logging.WARNING, logger="midlevel_fast.scaleout.collection"):
        chunked = score_collection(tmp_path / "images", tmp_path / "chunked.jsonl", model, top=3, num_workers=0,
                                   progress=False, batch_images=3)
    assert (one.scored, one.failed) == (chunked.scored, chunked.failed) == (6, 2)
    assert any("skipped im03b.png: refused" in r.getMessage() for r in caplog.records)
    want, got = read_rows(tmp_path / "one.jsonl"), read_rows(tmp_path / "chunked.jsonl")
    assert paths(got) == paths(want)
    for g, w in zip(got, want):
        assert [t["class"] for t in g["classes"]] == [t["class"] for t in w["classes"]]
        np.testing.assert_allclose([t["score"] for t in g["classes"]], [t["score"] for t in w["classes"]], rtol=1e-4)
        assert [t["point"] for t in g["classes"]] == [t["point"] for t in w["classes"]]
        assert len(g["detections"]) == len(w["detections"])
    assert paths(read_rows(tmp_path / "chunked.errors.jsonl")) == ["im02.png", "im03b.png"]
    with pytest.raises(ValueError, match="batch_images >= 1"):
        score_collection(tmp_path / "images", tmp_path / "bad.jsonl", model, batch_images=0, progress=False)

"""What a new user trips over: tiny images scored silently, panoramas refused late in dense mode, no
progress on huge batched images, refused images listed as "unreadable" by score-dir, DataLoader workers outliving
a killed score-dir."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from midlevel_fast.cli import main
from midlevel_fast.model.classifier import load_model
from midlevel_fast.scaleout.collection import score_collection
from midlevel_fast.scaleout.results import read_rows
from midlevel_fast.features import batched
from midlevel_fast.features.batched import PROGRESS_MIN_PATCHES, batched_features, show_progress
from midlevel_fast.features.dense import MAX_DENSE_PIXELS, dense_plane_sizes, dense_windows
from midlevel_fast.features.grid import PAPER_SCALES
from midlevel_fast.features.limits import check_image_size, min_image_side, min_patch_side
from midlevel_fast.scoring.score import score_image


@pytest.fixture(scope="module")
def model():
    return load_model("imagenet")


@pytest.fixture(scope="module")
def tiny_model():
    """One scale only: the cheapest real scoring (as tests/distributed_worker.py's)."""
    m = load_model("imagenet")
    m.info.scales = [1.0]
    return m


@pytest.fixture
def no_trunk(monkeypatch, model):
    """Makes the backbone's trunk and forward record their calls instead of working."""
    calls = []
    bb = model.backbone
    monkeypatch.setattr(bb, "trunk", lambda *a, **k: calls.append("trunk"))
    monkeypatch.setattr(bb, "forward", lambda *a, **k: calls.append("forward"))
    return calls


def save(path: Path, h: int, w: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


# 1. Too small an image.

def test_minimum_size_is_one_pixel_per_trunk_cell(model):
    bb = model.backbone
    assert min_patch_side(bb) == 7  # 224 / 32
    assert min_image_side(bb, PAPER_SCALES) == 28 and min_image_side(bb, [1.0]) == 7
    check_image_size(28, 500, PAPER_SCALES, bb)  # the smallest accepted: patches of 7 px
    with pytest.raises(ValueError, match=r"image is 27x500 pixels, too small to score: its shorter side must be "
                                         r"at least 28 px \(its smallest patches, min\(W, H\)/4, would be 6.75 px"):
        check_image_size(27, 500, PAPER_SCALES, bb)


@pytest.mark.parametrize("mode", ["dense", "batched", "naive"])
def test_tiny_image_is_refused_before_any_work(tmp_path, model, no_trunk, mode):
    path = save(tmp_path / "tiny.png", 1, 1)
    with pytest.raises(ValueError) as e:
        score_image(path, model, mode=mode)
    assert str(e.value).startswith(f"image file {str(path)!r} is 1x1 pixels, too small to score")
    assert "at least 28 px" in str(e.value) and no_trunk == []
    with pytest.raises(ValueError, match=r"^image is 20x300 pixels, too small .* at least 28 px"):
        score_image(np.zeros((300, 20, 3), np.uint8), model, mode=mode)


def test_cli_score_reports_a_tiny_image_without_traceback(tmp_path, capsys):
    tiny = save(tmp_path / "tiny.png", 1, 1)
    assert main(["score", str(tiny), "--head", "imagenet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: image file {str(tiny)!r} is 1x1 pixels, too small to score: its shorter side "
                          "must be at least 28 px") and "Traceback" not in err


# 2. Dense mode and panoramas.

def test_dense_plane_sizes_are_the_planes_the_trunk_sees(model, monkeypatch):
    bb = model.backbone
    seen = []
    trunk = bb.trunk
    monkeypatch.setattr(bb, "trunk", lambda x: seen.append(tuple(x.shape[-2:])) or trunk(x))
    scales = [1.0, 2.8]
    with torch.inference_mode():
        dense_windows(bb, np.zeros((70, 110, 3), np.uint8), scales=scales)
    assert seen == dense_plane_sizes(110, 70, scales, bb.input_size, bb.cell_size * 2)


def test_panorama_is_refused_in_dense_mode_before_any_trunk_pass(model, no_trunk):
    # 40x800: planes of 224λ x 4480λ pixels, 1.0 M at λ = 1 (fits) but 16 M at λ = 4 (does not).
    image = np.zeros((40, 800, 3), np.uint8)
    sizes = dense_plane_sizes(800, 40, PAPER_SCALES, 224, 64)
    assert sizes[0][0] * sizes[0][1] < MAX_DENSE_PIXELS < sizes[-1][0] * sizes[-1][1]
    advice = "use mode='batched' (CLI: --mode batched)"
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"^image 800x40 is too elongated for mode 'dense': at scale λ=\d") as e:
        dense_windows(model.backbone, image)
    assert advice in str(e.value)
    with pytest.raises(ValueError, match=r"too elongated") as e:
        score_image(image, model, mode="dense")
    assert advice in str(e.value) and no_trunk == [] and time.perf_counter() - t0 < 2


# 3. Progress over the chunks of a huge image in batched mode.

def test_progress_rule(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="midlevel_fast")
    assert not show_progress(None, 10**6)  # pytest's captured stderr is no terminal
    assert show_progress(True, 1) and not show_progress(False, 10**6)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert show_progress(None, PROGRESS_MIN_PATCHES + 1) and not show_progress(None, PROGRESS_MIN_PATCHES)
    caplog.set_level(logging.WARNING, logger="midlevel_fast")  # the library's logging says no bars
    assert not show_progress(None, PROGRESS_MIN_PATCHES + 1) and show_progress(True, 1)


def test_batched_progress_bar(model, capsys, monkeypatch, caplog):
    image = np.zeros((60, 80, 3), np.uint8)
    boxes = torch.tensor([[0, 0, 60, 60], [20, 0, 80, 60], [10, 10, 40, 40]], dtype=torch.float32)
    with torch.inference_mode():
        quiet = batched_features(model.backbone, image, boxes, batch=2)
        assert capsys.readouterr().err == ""
        loud = batched_features(model.backbone, image, boxes, batch=2, progress=True)
    err = capsys.readouterr().err
    # tqdm throttles redraws (and leave=False erases the bar), so which counts appear depends on timing.
    assert "patches:" in err and "/3 [" in err
    torch.testing.assert_close(quiet, loud)
    # Auto on a terminal, where the library logs INFO: a bar for a long image only.
    caplog.set_level(logging.INFO, logger="midlevel_fast")
    monkeypatch.setattr(batched, "PROGRESS_MIN_PATCHES", 1)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with torch.inference_mode():
        batched.batched_patches(model.backbone, image, scales=[1.0])  # 2 patches
    assert "patches" in capsys.readouterr().err


# 4. score-dir tells unreadable from refused.

def images_dir(root: Path) -> Path:
    save(root / "good.png", 48, 64)
    save(root / "tiny.png", 3, 5)
    bad = save(root / "broken.png", 48, 64, seed=1)
    bad.write_bytes(bad.read_bytes()[:200])
    return root


def test_collection_records_unreadable_and_refused(tmp_path, tiny_model, caplog):
    images = images_dir(tmp_path / "images")
    out = tmp_path / "scores.jsonl"
    with caplog.at_level(logging.WARNING, logger="midlevel_fast.scaleout.collection"):
        res = score_collection(images, out, tiny_model, top=2, num_workers=0, progress=False)
    assert (res.scored, res.failed, res.rows, res.errors) == (1, 2, 1, 2)
    errors = {r["path"]: r["error"] for r in read_rows(tmp_path / "scores.errors.jsonl")}
    assert errors["broken.png"].startswith("unreadable: image file ") and "cannot decode" in errors["broken.png"]
    assert errors["tiny.png"].startswith("refused: image is 5x3 pixels, too small to score")
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("skipped tiny.png: refused: image is 5x3 pixels") for m in logged)
    assert any(m.startswith("skipped broken.png: unreadable: ") for m in logged)


def test_cli_score_dir_summary_distinguishes_the_failures(tmp_path, capsys):
    images = images_dir(tmp_path / "images")
    out = tmp_path / "scores.jsonl"
    assert main(["score-dir", str(images), "--out", str(out), "--head", "imagenet", "--workers", "0",
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert (f"1 rows in {out}; 2 images could not be scored (1 unreadable, 1 refused; listed with the reasons in "
            f"{tmp_path / 'scores.errors.jsonl'})") in err
    assert "unreadable images listed" not in err


# 5. DataLoader workers die with a killed score-dir.

CHILD = """
import os, sys, time
from pathlib import Path
from midlevel_fast.model.classifier import load_model
from midlevel_fast.scaleout import collection, inputs

images, out, ready, how = sys.argv[1:5]
def stall(*args, **kwargs):  # the first image reached the model: the workers are up and decoding ahead
    Path(ready).write_text(str(os.getpid()))
    time.sleep(600)
collection.score_image = stall
if how == "poll":  # as where prctl is not available: the liveness thread alone
    inputs._parent_death_signal = lambda: False
elif how == "none":  # no guard at all, to see the failure it prevents (one worker stays, asleep, for ever)
    inputs._die_with_parent = lambda *args: None
collection.score_collection(images, out, load_model("imagenet"), num_workers=2, progress=False)
"""


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid``, from /proc (``/proc/PID/task/*/children`` needs a kernel option)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (a dead process not yet reaped holds no memory)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["prctl", "poll"])
def test_workers_exit_when_score_dir_is_killed(tmp_path, how):
    # Decoded images of 196 KB, more than a pipe holds: the workers block handing them over, the state in which
    # they used to outlive their parent forever.
    for i in range(8):
        save(tmp_path / "images" / f"im{i}.png", 256, 256, seed=i)
    ready = tmp_path / "ready"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "child.log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "images"), str(tmp_path / "out.jsonl"),
                                 str(ready), how], stdout=log, stderr=subprocess.STDOUT, env=env)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and len(workers := children(proc.pid)) >= 2):
            assert proc.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "score_collection never reached its first image"
            time.sleep(0.1)
        time.sleep(0.5)  # let the workers decode ahead and block on the full pipe
        assert all(running(w) for w in workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # torch's own watchdog would notice only after 5 s, and then hang on the pipe; the kernel's SIGKILL is
        # immediate, the fallback's poll takes half a second.
        deadline = time.monotonic() + 3
        while any(running(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = [w for w in workers if running(w)]
        assert not alive, f"DataLoader workers {alive} outlived their killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for w in workers:
            if running(w):
                os.kill(w, signal.SIGKILL)

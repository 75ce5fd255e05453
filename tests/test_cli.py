"""The ``midlevel-fast`` command line: every command group through :func:`midlevel_fast.cli.main`, its exit
statuses and messages."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from midlevel_fast.cli import build_parser, main
from midlevel_fast.cli import score as cli_score
from midlevel_fast.cli.score import format_result, shown_classes
from midlevel_fast.model.head import load_head
from midlevel_fast.viz.overlay import map_file_name
from midlevel_fast.scaleout.results import read_rows
from midlevel_fast.scoring.detections import Detection
from midlevel_fast.model.presence import Calibration
from midlevel_fast.scoring.score import score_image
from tests.distributed_worker import tiny_model, write_images
from tests.helpers import make_voc, obj
from tests.test_overlay import made_result


def test_score_demo_photo_with_maps(tmp_path, capsys):
    pytest.importorskip("skimage", reason="--demo photos come from scikit-image")
    assert main(["score", "--demo", "chelsea", "--head", "imagenet", "--top", "2", "--maps", str(tmp_path),
                 "--maps-for", "2"]) == 0
    out = capsys.readouterr().out
    assert "demo:chelsea" in out and "cat" in out and "0.0000" not in out
    assert len([line for line in out.splitlines() if line.endswith("boxes") or line.endswith("box")]) == 2
    pngs = sorted(p.name for p in tmp_path.iterdir())
    assert len(pngs) == 2 and all(p.endswith(".png") for p in pngs)
    # The one naming scheme of map files (midlevel_fast.viz.overlay.map_file_name): image stem, rank, class.
    assert [p[:15] for p in pngs] == ["demo_chelsea_1_", "demo_chelsea_2_"]
    assert all(f"map -> {tmp_path / p}" in out for p in pngs)
    with Image.open(tmp_path / pngs[0]) as im:
        assert im.size[1] == 300 and im.size[0] > 451  # the photo, and the colour bar to its right


def test_score_lines_without_calibration():
    res = made_result(detections=[Detection("dog", 0.8, (1.0, 2.0, 30.0, 40.0)),
                                  Detection("dog", 0.6, (40.0, 2.0, 70.0, 50.0))])
    lines = format_result("img.jpg", res, shown_classes(res, top=2))
    assert lines[0] == "img.jpg  (dense, 1 patches, 0.25 s)"
    # The two best by score: presence n/a, score in scientific notation, name, pixel of the point, boxes.
    assert lines[1:] == ["      n/a  2.5e-02  dog  at (20, 30)  2 boxes",
                         "      n/a  3.9e-03  cat  at (60, 15)  0 boxes"]
    assert shown_classes(res) == [1, 0, 2]  # 3 by default
    assert shown_classes(res, show_all=True) == [1, 0, 2]
    assert not any("0.0000" in line for line in lines)


def test_score_lines_with_calibration():
    res = made_result(presence=[0.973, 0.61, 0.001], detections=[Detection("cat", 0.9, (1.0, 2.0, 30.0, 40.0))],
                      points={"dog": (20.5, 30.5)})
    shown = shown_classes(res, top=1)
    assert shown == [1, 0]  # the present classes, best score first, whatever --top says
    assert format_result("x", res, shown)[1:] == ["   61.0 %  2.5e-02  dog  at (20, 30)  0 boxes",
                                                  "   97.3 %  3.9e-03  cat  at -  1 box"]
    everything = format_result("x", res, shown_classes(res, show_all=True))
    assert everything[-1] == "    0.1 %  1.2e-06  bus  at -  0 boxes"
    # None present: the --top best by score, and a line that says so.
    absent = made_result(presence=[0.2, 0.3, 0.1])
    assert shown_classes(absent, top=2) == [1, 0]
    lines = format_result("x", absent, shown_classes(absent, top=2))
    assert lines[1] == "  no class present (P >= 50 %); the best by score:"
    assert lines[2].startswith("   30.0 %  2.5e-02")


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def calibrated(model, present: int):
    """``model`` with a Platt calibration that makes class ``present`` present (P = 0.9999) and no other."""
    c = len(model.class_names)
    parameters = torch.zeros(c, 2, dtype=torch.float64)
    parameters[:, 1] = -10.0
    parameters[present, 1] = 10.0
    none = torch.zeros(1, c, dtype=torch.bool)
    cal = Calibration("platt", parameters, 5.0, torch.zeros(1, c, dtype=torch.float64), none, none)
    return type(model)(model.backbone, model.head, dataclasses.replace(model.info, calibration=cal)).eval()


def test_cli_score_json_and_all(tmp_path, capsys, monkeypatch, tiny):
    monkeypatch.setattr(cli_score, "load_cli_model", lambda *a, **kw: tiny)
    image = str(write_images(tmp_path / "images", 1)[0])
    assert main(["score", image, "--json", "--maps", str(tmp_path / "maps")]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # JSON Lines
    # The record of ScoreResult.to_dict (tests/test_result.py) under the image's name, with the map files.
    assert len(records) == 1 and list(records[0]) == ["image", "width", "height", "mode", "k", "patches", "classes",
                                                      "detections", "seconds", "maps"]
    classes = records[0]["classes"]
    assert len(classes) == 1000 and all(set(c) == {"class", "score", "presence", "point"} for c in classes)
    assert [c["score"] for c in classes] == sorted((c["score"] for c in classes), reverse=True)
    assert all(c["presence"] is None for c in classes)
    # Points for the MAX_POINTS best classes (1000 ImageNet maps would cost too much), null for the rest.
    assert all(c["point"] is not None for c in classes[:cli_score.MAX_POINTS])
    assert all(c["point"] is None for c in classes[cli_score.MAX_POINTS:])
    assert records[0]["maps"] == [map_file_name("im00", 1, classes[0]["class"])]
    assert (tmp_path / "maps" / records[0]["maps"][0]).is_file()

    assert main(["score", image, "--all"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 1 + 1000 and "0.0000" not in captured.out
    assert all(line.startswith("      n/a  ") and "e-" in line for line in lines[1:])
    assert "no calibration" in captured.err

    assert main(["score", image, "--top", "4"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 4
    assert main(["score", image, "--maps-for", "2"]) == 2
    assert "--maps-for needs --maps" in capsys.readouterr().err


def test_cli_score_with_calibration_shows_and_maps_the_present_classes(tmp_path, capsys, monkeypatch, tiny):
    image = str(write_images(tmp_path / "images", 1)[0])
    second = int(torch.topk(score_image(image, tiny).scores, 2).indices[1])  # present, though not the best
    monkeypatch.setattr(cli_score, "load_cli_model", lambda *a, **kw: calibrated(tiny, second))
    maps = tmp_path / "maps"
    assert main(["score", image, "--maps", str(maps)]) == 0
    out = capsys.readouterr().out.splitlines()
    name = tiny.class_names[second]
    assert out[1].startswith("  100.0 %  ") and f"  {name}  at (" in out[1] and len(out) == 3
    assert out[2] == f"  map -> {maps / map_file_name('im00', 1, name)}"
    assert main(["score", image, "--maps", str(maps), "--maps-for", "3", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert len(record["maps"]) == 3 and record["maps"][1] == map_file_name("im00", 2, name)
    assert record["classes"][1]["presence"] == pytest.approx(1.0, abs=1e-4)
    assert record["classes"][0]["presence"] == pytest.approx(0.0, abs=1e-4)
    assert all(c["point"] is not None for c in record["classes"][:cli_score.MAX_POINTS])
    # Nothing present: the best by score are shown, and no map is written without --maps-for.
    nothing = calibrated(tiny, 0)
    nothing.info.calibration.parameters[0, 1] = -10.0
    monkeypatch.setattr(cli_score, "load_cli_model", lambda *a, **kw: nothing)
    assert main(["score", image, "--maps", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert "no class present" in out and "no map: no class present" in out
    assert not (tmp_path / "none").exists() or not list((tmp_path / "none").iterdir())


def test_map_names_of_score_inputs_stay_apart():
    stems = cli_score._map_names(["a/x.jpg", "b/x.jpg", "y.jpg", "y.png", "demo:chelsea", "z.jpg"])
    assert stems["z.jpg"] == "z" and stems["demo:chelsea"] == "demo_chelsea"
    assert len(set(stems.values())) == 6


def test_bad_file_reports_and_fails(tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    assert main(["score", str(bad), str(tmp_path / "missing.png"), "--head", "imagenet", "--mode", "batched"]) == 1
    err = capsys.readouterr().err
    assert "bad.jpg" in err and "missing.png" in err


def test_cli_score_precision(tmp_path, capsys, monkeypatch, tiny):
    monkeypatch.setattr(cli_score, "load_cli_model", lambda *a, **kw: tiny)
    image = str(write_images(tmp_path / "images", 1)[0])
    tops = []
    for precision in ("fp32", "bf16"):
        assert main(["score", image, "--json", "--precision", precision]) == 0
        tops.append(json.loads(capsys.readouterr().out)["classes"][0]["class"])
    assert tops[0] == tops[1]
    with pytest.raises(SystemExit) as exc:
        main(["score", image, "--precision", "fp8"])
    assert exc.value.code == 2 and "invalid choice: 'fp8'" in capsys.readouterr().err


def test_no_input_is_a_usage_error(capsys):
    assert main(["score", "--head", "imagenet"]) == 2
    assert "error: give at least one IMAGE or --demo NAME" in capsys.readouterr().err


def test_errors_are_reported_without_a_traceback(tmp_path, capsys):
    image = write_images(tmp_path / "images", 1)[0]
    assert main(["score", str(image), "--head", str(tmp_path / "nope.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: head ") and "is not a file" in err and "Traceback" not in err
    assert main(["cache", "--voc", str(tmp_path / "novoc"), "--cache", str(tmp_path / "cache")]) == 2
    assert capsys.readouterr().err.startswith("error: VOC root")


def test_cli_score_dir(tmp_path, capsys):
    write_images(tmp_path / "images", 2, corrupt=(1,))
    out = tmp_path / "scores.jsonl"
    assert main(["score-dir", str(tmp_path / "images"), "--out", str(out), "--head", "imagenet", "--top", "2",
                 "--maps", str(tmp_path / "maps"), "--workers", "0", "--no-progress"]) == 1  # one unreadable
    rows = read_rows(out)
    # No calibration: the map of the best class only, named <stem>_<rank>_<class>.png as `score` names it.
    assert [r["path"] for r in rows] == ["im00.png"] and len(rows[0]["maps"]) == 1
    assert rows[0]["maps"] == [map_file_name("im00", 1, rows[0]["classes"][0]["class"])]
    assert all((tmp_path / "maps" / name).is_file() for name in rows[0]["maps"])
    # The settings of the meta file, then the keys of `score --json` (the image's name is `path`).
    assert list(rows[0]) == ["path", "mode", "k", "backbone", "detection_threshold", "width", "height", "patches",
                             "classes", "detections", "seconds", "maps"]
    assert len(rows[0]["classes"]) == 2
    assert all(c["presence"] is None and c["point"] is not None for c in rows[0]["classes"])
    assert rows[0]["detections"] == []
    assert "1 unreadable" in capsys.readouterr().err
    chunked = tmp_path / "chunked.jsonl"
    assert main(["score-dir", str(tmp_path / "images"), "--out", str(chunked), "--head", "imagenet", "--top", "2",
                 "--workers", "0", "--no-progress", "--batch-images", "2"]) == 1
    assert [r["classes"][0]["class"] for r in read_rows(chunked)] == [rows[0]["classes"][0]["class"]]
    with pytest.raises(SystemExit):
        main(["score-dir", str(tmp_path / "images"), "--out", str(chunked), "--batch-images", "0"])
    assert "--batch-images: must be >= 1, got 0" in capsys.readouterr().err


def test_train_pools_the_patches_of_dense_and_batched_features(tmp_path, capsys):
    voc = make_voc(tmp_path / "voc", obj("cat", (4, 3, 36, 28)))
    common = ["--voc", str(voc), "--split", "train", "--cache", str(tmp_path / "cache"), "--mode", "dense", "batched"]
    assert main(["cache", *common]) == 0
    out = capsys.readouterr().out
    assert "(dense)" in out and "(batched)" in out
    head_file = tmp_path / "head.safetensors"
    assert main(["train", *common, "--val-split", "", "--epochs", "2", "--out", str(head_file)]) == 0
    rows = int(capsys.readouterr().out.split(" training patches")[0].split()[-1])
    _, info = load_head(head_file)
    assert info.extra["mode"] == ["dense", "batched"]
    single = tmp_path / "dense.safetensors"
    assert main(["train", *common[:-1], "--val-split", "", "--epochs", "1", "--out", str(single)]) == 0
    dense_rows = int(capsys.readouterr().out.split(" training patches")[0].split()[-1])
    assert load_head(single)[1].extra["mode"] == "dense" and 0 < dense_rows < rows
    tied = tmp_path / "tied.safetensors"
    assert main(["train", *common, "--val-split", "", "--epochs", "1", "--consistency", "2", "--out", str(tied)]) == 0
    assert " dense/crop pairs" in capsys.readouterr().out
    assert load_head(tied)[1].extra["train"]["consistency"] == 2.0
    assert main(["train", *common[:-1], "--consistency", "1", "--out", str(tmp_path / "no.safetensors")]) == 2
    assert "needs --mode dense batched" in capsys.readouterr().err


def test_mode_takes_several_values_for_cache_and_train_only():
    parse = build_parser().parse_args
    assert parse(["train", "--voc", "v", "--out", "h", "--mode", "dense", "batched"]).mode == ["dense", "batched"]
    assert parse(["cache", "--voc", "v"]).mode == ["dense"]
    assert parse(["eval", "--voc", "v", "--head", "h"]).mode == "dense"
    with pytest.raises(SystemExit):
        parse(["cache", "--voc", "v", "--mode", "naive"])  # naive scores, it caches nothing
    assert parse(["score", "--mode", "naive"]).mode == "naive"


def test_version_and_help_texts(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("midlevel-fast ")
    commands = build_parser()._subparsers._group_actions[0].choices
    assert "``" not in build_parser().format_help()
    for name, sub in commands.items():
        for action in sub._actions:
            # Every option says what it does (argparse's own --help included).
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"


def test_cat_motorbike_demo_is_the_two_photos_side_by_side():
    skimage_data = pytest.importorskip("skimage.data", reason="--demo photos come from scikit-image")
    from midlevel_fast.cli.score import _demo_image
    img = _demo_image("cat_motorbike")
    cat = skimage_data.chelsea()
    assert img.dtype == np.uint8 and img.shape[0] == cat.shape[0] and img.shape[1] > 1.9 * cat.shape[1]
    np.testing.assert_array_equal(img[:, : cat.shape[1]], cat)


@pytest.mark.parametrize("value", ["1.5", "-0.1", "half"])
def test_box_score_must_be_a_probability(value, capsys):
    with pytest.raises(SystemExit) as e:
        main(["score", "x.jpg", "--box-score", value])
    assert e.value.code == 2
    assert "--box-score: expected a probability in [0, 1]" in capsys.readouterr().err

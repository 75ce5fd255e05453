"""The ``midlevel-fast`` command line: every command group through :func:`midlevel_fast.cli.main`, its exit
statuses and messages."""
from __future__ import annotations

import pytest
from PIL import Image

from midlevel_fast.cli import build_parser, main
from midlevel_fast.head import load_head
from midlevel_fast.scaleout.results import read_rows
from tests.distributed_worker import write_images
from tests.helpers import make_voc, obj


def test_score_demo_photo_with_maps(tmp_path, capsys):
    pytest.importorskip("skimage", reason="--demo photos come from scikit-image")
    assert main(["score", "--demo", "chelsea", "--head", "imagenet", "--top", "2", "--maps", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "demo:chelsea" in out and "cat" in out
    pngs = sorted(p.name for p in tmp_path.iterdir())
    assert len(pngs) == 2 and all(p.endswith(".png") for p in pngs)
    # The one naming scheme of map files (midlevel_fast.io.overlay.map_file_name): image, place, class.
    assert [p[:15] for p in pngs] == ["demo_chelsea_1_", "demo_chelsea_2_"]
    assert all(f"map -> {tmp_path / p}" in out for p in pngs)
    with Image.open(tmp_path / pngs[0]) as im:
        assert im.size == (451, 300)


def test_bad_file_reports_and_fails(tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    assert main(["score", str(bad), str(tmp_path / "missing.png"), "--head", "imagenet", "--mode", "batched"]) == 1
    err = capsys.readouterr().err
    assert "bad.jpg" in err and "missing.png" in err


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
                 "--maps", str(tmp_path / "maps"), "--workers", "0", "--no-progress"]) == 0
    rows = read_rows(out)
    assert [r["path"] for r in rows] == ["im00.png"] and len(rows[0]["maps"]) == 2
    assert [name[:11] for name in rows[0]["maps"]] == ["im00.png_1_", "im00.png_2_"]
    assert all((tmp_path / "maps" / name).is_file() for name in rows[0]["maps"])
    assert "1 unreadable" in capsys.readouterr().err


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
    with pytest.raises(SystemExit, match="needs --mode dense batched"):
        main(["train", *common[:-1], "--consistency", "1", "--out", str(tmp_path / "no.safetensors")])


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

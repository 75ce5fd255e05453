"""What every ``midlevel-fast`` command promises: its exit statuses (0 ok, 1 some inputs failed, 2 usage error, no
traceback), ``score`` going on past a bad image, ``--json`` streamed as JSON Lines, ``eval --json``, AlexNet through
``--weights`` and the logging flags ``-q``/``-v``."""
from __future__ import annotations

import json
import logging
import sys

import pytest
import torch

from midlevel_fast.cli import build_parser, main
from midlevel_fast.cli import score as cli_score
from midlevel_fast.cli.common import configured_logging
from midlevel_fast.model.head import load_head
from midlevel_fast.cache.feature_cache import FeatureCache
from midlevel_fast.cache.build import build_cache
from tests.distributed_worker import tiny_model, write_images
from tests.helpers import TOY_CACHE_CONFIG, make_voc, obj, random_alexnet, toy_extract

ALEXNET_HINT = ("error: alexnet has no embedded weights: pass --weights FILE (a torchvision AlexNet state dict, e.g. "
                "from torchvision.models.alexnet(weights=...).state_dict())")


@pytest.fixture
def tiny(monkeypatch):
    """``score`` on EfficientNet-Lite0's ImageNet classifier at one scale (the commands are given --head imagenet,
    which is the same model at the paper's scales)."""
    model = tiny_model()
    monkeypatch.setattr(cli_score, "load_cli_model", lambda *a, **kw: model, raising=False)
    return model


@pytest.mark.parametrize("args, message", [
    (["score", "--head", "imagenet"], "give at least one IMAGE or --demo NAME"),
    (["score", "x.png", "--maps-for", "2"], "--maps-for needs --maps DIR"),
    (["score-boxes", "x.png"], "give the boxes as --boxes"),
    (["train", "--task", "boxes", "--out", "h"], "--task boxes reads --data PATH --format"),
    (["train", "--voc", "V", "--unfreeze", "top", "--out", "h"], "--unfreeze top trains one patch per box"),
    (["train", "--out", "h"], "give the data set as --voc VOC_ROOT or as --data PATH"),
])
def test_usage_errors_exit_2_without_a_traceback(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and "Traceback" not in err


def test_help_documents_the_exit_statuses():
    parser = build_parser()
    expected = "exit status: 0 success; 1 some inputs could not be processed"
    assert expected in " ".join(parser.format_help().split())
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        assert expected in " ".join(sub.format_help().split()), name


def test_score_goes_on_past_a_directory_and_exits_1(tmp_path, capsys, tiny):
    good = str(write_images(tmp_path / "images", 1)[0])
    folder = tmp_path / "folder"
    folder.mkdir()
    assert main(["score", str(folder), good, "--head", "imagenet"]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{good}  (dense, ")
    err = captured.err.splitlines()
    assert err[0].startswith(f"error: image file {str(folder)!r} is a directory") and "score-dir" in err[0]
    assert "Traceback" not in captured.err


def test_score_json_is_json_lines_with_a_line_per_failed_image(tmp_path, capsys, tiny):
    first, second = map(str, write_images(tmp_path / "images", 2))
    missing = str(tmp_path / "missing.png")
    assert main(["score", first, missing, second, "--head", "imagenet", "--json"]) == 1
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["image"] for line in lines] == [first, missing, second]
    assert len(lines[0]["classes"]) == 1000 and "error" not in lines[0] and "error" not in lines[2]
    assert set(lines[1]) == {"image", "error"} and "missing.png" in lines[1]["error"]
    assert f"error: {lines[1]['error']}" in captured.err


class _Stdout:
    """Standard output that records what had been flushed."""

    def __init__(self) -> None:
        self.text, self.flushed = "", ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        self.flushed = self.text


def test_score_json_lines_are_out_before_a_later_image_stops_the_run(tmp_path, monkeypatch, tiny):
    images = list(map(str, write_images(tmp_path / "images", 2)))
    out = _Stdout()
    monkeypatch.setattr(sys, "stdout", out)
    score = cli_score.score_image
    seen_before_second = []

    def score_then_stop(source, *args, **kw):
        if source == images[1]:
            seen_before_second.append(out.flushed)
            raise KeyboardInterrupt
        return score(source, *args, **kw)

    monkeypatch.setattr(cli_score, "score_image", score_then_stop)
    with pytest.raises(KeyboardInterrupt):
        main(["score", *images, "--head", "imagenet", "--json"])
    assert seen_before_second and seen_before_second[0].endswith("\n")
    (line,) = seen_before_second[0].splitlines()
    assert json.loads(line)["image"] == images[0]


@pytest.fixture(scope="module")
def voc_head(tmp_path_factory):
    """A two-image VOC tree (train and val one image each), its cache directory and a head trained on train."""
    tmp = tmp_path_factory.mktemp("eval")
    root = tmp / "voc"
    make_voc(root, obj("cat", (4, 3, 36, 28)), image_id="img0", split="img0\n")
    make_voc(root, obj("dog", (2, 2, 30, 25)), image_id="img1", split="img0\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("img1\n")
    common = ["--voc", str(root), "--cache", str(tmp / "cache")]
    head = tmp / "head.safetensors"
    assert main(["train", *common, "--split", "train", "--val-split", "", "--epochs", "1", "--hidden", "16",
                 "--out", str(head)]) == 0
    return common, head


def test_eval_json_is_one_json_object(voc_head, capsys):
    common, head = voc_head
    capsys.readouterr()
    assert main(["eval", *common, "--head", str(head), "--split", "val", "--k", "1", "5", "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    record = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert {k: record[k] for k in ("split", "mode", "images")} == {"split": "val", "mode": "dense", "images": 1}
    assert record["patches"] > 0 and [r["k"] for r in record["results"]][::2] == [1.0, 5.0]
    for result in record["results"]:
        assert len(result["ap"]) == 20 and result["ap"]["cat"] is None  # no cat in val: AP undefined
        assert result["ap"]["dog"] == pytest.approx(1.0) and result["map"] == pytest.approx(1.0)


@pytest.mark.parametrize("command", [
    ["score", "x.png", "--head", "imagenet"],
    ["score-dir", "d", "--out", "o.jsonl", "--head", "imagenet"],
    ["score-boxes", "x.png", "--boxes", "0,0,9,9", "--head", "imagenet"],
    ["cache", "--voc", "V"],
    ["train", "--voc", "V", "--out", "h.safetensors"],
])
def test_alexnet_without_weights_is_refused_up_front(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--backbone", "alexnet"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ALEXNET_HINT
    assert list(tmp_path.iterdir()) == []  # refused before anything was read or written


def test_alexnet_with_a_torchvision_state_dict_works_end_to_end(tmp_path, capsys):
    weights = tmp_path / "alexnet.pth"
    torch.save(random_alexnet().state_dict(), weights)  # torchvision's key layout: features.0.weight ...
    image = str(write_images(tmp_path / "images", 1)[0])
    alexnet = ["--backbone", "alexnet", "--weights", str(weights)]
    assert main(["score", image, "--head", "imagenet", "--json", *alexnet]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["image"] == image and len(record["classes"]) == 1000

    root = make_voc(tmp_path / "voc", obj("cat", (4, 3, 36, 28)))
    common = ["--voc", str(root), "--cache", str(tmp_path / "cache"), "--split", "train"]
    head = tmp_path / "head.safetensors"
    assert main(["train", *common, "--val-split", "", "--epochs", "1", "--hidden", "16", "--out", str(head),
                 *alexnet]) == 0
    assert load_head(head)[1].backbone == "alexnet"
    capsys.readouterr()
    # The head's backbone needs the weights too, and eval refuses without them.
    assert main(["eval", *common[:4], "--split", "train", "--head", str(head)]) == 2
    assert capsys.readouterr().err.strip() == ALEXNET_HINT
    assert main(["eval", *common[:4], "--split", "train", "--head", str(head), "--weights", str(weights),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 1
    # fit-boxes and calibrate build the head's backbone without weights: refused up front with the way out.
    for command in (["fit-boxes", "--out", str(tmp_path / "boxes.safetensors")],
                    ["calibrate", "--split", "train", "--out", str(tmp_path / "cal.safetensors")]):
        assert main([*command, *common[:4], "--head", str(head)]) == 2
        assert capsys.readouterr().err.strip() == (
            f"error: {command[0]}: the head {head} is on alexnet, whose weights {command[0]} cannot take yet (it has "
            f"no --weights); for a box regression, train the head with --task boxes and --weights FILE; or use a head "
            f"on efficientnet_lite0")


def test_quiet_silences_progress_and_summaries(tmp_path, capsys):
    write_images(tmp_path / "images", 1)
    run = ["score-dir", str(tmp_path / "images"), "--head", "imagenet", "--workers", "0"]
    assert main([*run, "--out", str(tmp_path / "a.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "1/1 [" in err and "scored 1 images" in err  # the bar and the summary
    assert main([*run, "--out", str(tmp_path / "b.jsonl"), "-q"]) == 0
    assert capsys.readouterr().err == ""
    logger = logging.getLogger("midlevel_fast")
    before = logger.level, list(logger.handlers)
    for flag, level in (("-q", logging.WARNING), ("-v", logging.DEBUG), (None, logging.INFO)):
        with configured_logging(build_parser().parse_args([*run, "--out", "x.jsonl", *[flag] * bool(flag)])):
            assert logger.getEffectiveLevel() == level and len(logger.handlers) == len(before[1]) + 1
    assert (logger.level, logger.handlers) == before  # a program calling main keeps its logging


def test_library_progress_bars_follow_logging(tmp_path, capsys, caplog):
    items = [(p.stem, p) for p in write_images(tmp_path / "images", 2)]
    caplog.set_level(logging.WARNING, logger="midlevel_fast")
    build_cache(FeatureCache(tmp_path / "quiet", TOY_CACHE_CONFIG), items, toy_extract)
    assert capsys.readouterr().err == ""
    caplog.set_level(logging.INFO, logger="midlevel_fast")
    build_cache(FeatureCache(tmp_path / "shown", TOY_CACHE_CONFIG), items, toy_extract)
    assert "2/2 [" in capsys.readouterr().err
    # An explicit progress= wins over the logging level.
    build_cache(FeatureCache(tmp_path / "off", TOY_CACHE_CONFIG), items, toy_extract, progress=False)
    assert capsys.readouterr().err == ""

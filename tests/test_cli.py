import pytest

from midlevel_fast.cli import main


def test_score_demo_photo_with_maps(tmp_path, capsys):
    pytest.importorskip("skimage", reason="--demo photos come from scikit-image")
    assert main(["score", "--demo", "chelsea", "--head", "imagenet", "--top", "2", "--maps", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "demo:chelsea" in out and "cat" in out
    pngs = sorted(p.name for p in tmp_path.iterdir())
    assert len(pngs) == 2 and all(p.endswith(".png") for p in pngs)
    from PIL import Image

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

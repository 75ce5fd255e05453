import os

import pytest
import torch

from midlevel_fast import AdaptationHead, HeadInfo, load_head, save_head


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_head_per_patch_equals_dense(layers):
    torch.manual_seed(0)
    head = AdaptationHead(32, 5, layers=layers, hidden=16).eval()
    x = torch.randn(2, 32, 3, 4)
    dense = head(x)
    per_patch = head(x.permute(0, 2, 3, 1).reshape(-1, 32)).reshape(2, 3, 4, 5).permute(0, 3, 1, 2)
    torch.testing.assert_close(dense, per_patch)


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    head = AdaptationHead(32, 3, layers=2, hidden=16).eval()
    info = HeadInfo(backbone="efficientnet_lite0", class_names=["cat", "dog"], k=5.0, layers=2, hidden=16)
    path = tmp_path / "sub" / "h.safetensors"
    save_head(path, head, info)
    assert [p.name for p in path.parent.iterdir()] == ["h.safetensors"]  # no temporary left behind
    loaded, info2 = load_head(path)
    assert info2.class_names == ["cat", "dog"] and info2.background and info2.k == 5.0
    x = torch.randn(4, 32)
    torch.testing.assert_close(loaded(x), head(x))


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_head(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_head(bad)


def test_bad_head_config():
    with pytest.raises(ValueError, match="layers"):
        AdaptationHead(8, 2, layers=4)


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    from midlevel_fast.io import files

    head = AdaptationHead(4, 2, layers=1)
    info = HeadInfo(backbone="efficientnet_lite0", class_names=["a"], layers=1, hidden=16)
    path = tmp_path / "h.safetensors"
    save_head(path, head, info)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", boom)
    with pytest.raises(OSError):
        save_head(path, AdaptationHead(4, 2, layers=1), info)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["h.safetensors"]

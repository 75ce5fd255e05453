"""The scoring options (:mod:`midlevel_fast.scoring.options`): one frozen object, checked once, whose defaults are
the public functions' defaults; library calls leave the shared default model where it is."""
from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch

from midlevel_fast import ScoreOptions, score_collection, score_image, score_images
from midlevel_fast.model.classifier import default_model
from midlevel_fast.scoring.options import DEFAULTS, MODES
from midlevel_fast.scoring.score import checked_call


def test_frozen_with_the_documented_defaults():
    o = ScoreOptions()
    assert (o.mode, o.k, o.return_maps, o.precision, o.device) == ("dense", None, False, "auto", None)
    assert MODES == ("dense", "batched", "naive")
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.mode = "naive"  # type: ignore[misc]
    assert set(o.as_kwargs()) == {f.name for f in dataclasses.fields(ScoreOptions)}


@pytest.mark.parametrize("function", [score_image, score_images, score_collection])
def test_every_public_default_is_the_options_default(function):
    # One default per option: a keyword the function shares with ScoreOptions defaults to the same value.
    params = inspect.signature(function).parameters
    shared = [f.name for f in dataclasses.fields(ScoreOptions) if f.name in params]
    assert len(shared) >= 5
    for name in shared:
        assert params[name].default == getattr(DEFAULTS, name), name


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "fast"}, "mode must be one of"),
    ({"precision": "fp8"}, "precision must be one of"),
    ({"k": 0}, "k must be"), ({"k": float("nan")}, "k must be"), ({"k": float("inf")}, "k must be"),
    ({"k": "5"}, "k must be"),
    ({"return_maps": -1}, "return_maps must be"), ({"return_maps": 2.5}, "return_maps must be"),
    ({"window_step": 0}, "window_step must be"), ({"window_step": 1.5}, "window_step must be"),
    ({"batch_size": 0}, "batch_size must be"), ({"batch_size": True}, "batch_size must be"),
    ({"detection_threshold": 1.5}, "detection_threshold must be"),
    ({"detection_threshold": float("nan")}, "detection_threshold must be"),
    ({"device": "gpu"}, "device must name a torch device"),
])
def test_bad_options_are_refused_naming_the_option(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ScoreOptions(**kwargs)


def test_numpy_numbers_are_accepted():
    o = ScoreOptions(k=np.float32(2.5), batch_size=np.int64(8), return_maps=np.int64(3))
    assert o.batch_size == 8 and o.return_maps == 3


def test_score_image_refuses_before_decoding():
    # The options are checked before the image is read: a bad mode is named even for a missing file.
    with pytest.raises(ValueError, match="mode must be one of"):
        score_image("/nonexistent.jpg", mode="fast")


def test_the_default_model_is_never_moved_by_a_call():
    # A call on another device gets that device's own copy; the CPU one stays on the CPU for every later caller.
    cpu = default_model()
    assert default_model("cpu") is cpu
    model, k, device = checked_call(None, ScoreOptions(device="meta"))
    assert device == torch.device("meta") and next(model.parameters()).device.type == "meta"
    assert model is not cpu and next(cpu.parameters()).device.type == "cpu"
    assert default_model("meta") is model and k == cpu.info.k

"""A backbone's fine-tuned top (``--unfreeze top``, :mod:`midlevel_fast.training.unfreeze`) as tensors: read from a
backbone, stored in head files under :data:`TOP_PREFIX` with the backbone's state-dict names, put back into one."""
from __future__ import annotations

import torch

from midlevel_fast.backbones.base import Backbone

# The head file's tensors of a fine-tuned top: TOP_PREFIX + the backbone's state-dict name.
TOP_PREFIX = "top."


def top_state(backbone: Backbone) -> dict[str, torch.Tensor]:
    """The weights of ``backbone``'s top, by state-dict name (detached CPU copies)."""
    return {f"{name}.{key}": value.detach().cpu().clone()
            for name in backbone.top_modules for key, value in backbone.get_submodule(name).state_dict().items()}


def load_top(backbone: Backbone, state: dict[str, torch.Tensor], where: str) -> Backbone:
    """Copies a fine-tuned top (``state``, as :func:`top_state` gives) into ``backbone`` (in place) and returns it.
    ``ValueError`` naming ``where`` (the head file) when the tensors are not exactly ``backbone``'s top."""
    wanted = {k: v.shape for k, v in top_state(backbone).items()}
    got = {k: v.shape for k, v in state.items()}
    if wanted != got:
        missing, extra = sorted(set(wanted) - set(got)), sorted(set(got) - set(wanted))
        shapes = sorted(k for k in set(wanted) & set(got) if wanted[k] != got[k])
        raise ValueError(f"{where}: its fine-tuned top does not fit {backbone.name}'s (missing {missing}, unexpected "
                         f"{extra}, other shapes {shapes})")
    with torch.no_grad():
        for name, value in state.items():
            module, _, key = name.rpartition(".")
            target = getattr(backbone.get_submodule(module), key)
            target.copy_(value.to(target.dtype))
    return backbone

"""Device-independent cost figures that need no timing."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def saved_activation_bytes(model: nn.Module, x: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor]) -> int:
    """Bytes that autograd keeps alive for backward after one training forward.

    Counted through `saved_tensors_hooks`, each storage once, so it measures
    exactly what an in-place ReLU is said to save: a ReLU that overwrites its
    input shares that storage instead of keeping a second tensor. Parameters are
    left out (they are kept whether or not anything trains). The model is left
    in the mode it was in; BatchNorm's running stats are restored.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = loss(model(x))
    del out
    model.load_state_dict(buffers)
    model.train(was_training)
    return sum(storages.values())

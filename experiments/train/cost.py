"""Device-independent cost figures that need no timing."""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..errors import WriteError
from ..runs.atomic import write_json


def count_cost(model: nn.Module, x: torch.Tensor, cache_dir: Path | None = None) -> tuple[int, int]:
    """Parameters, and forward FLOPs for the input `x` (torch.utils.flop_counter).

    Counting runs the model under FlopCounterMode, a few tenths of a second on a 2-core
    CPU (its first use in a process also imports torch._dynamo, about 2 s, which the
    first optimizer would import anyway), so counts are kept in `cache_dir`/flops/ keyed
    on the torch version, the input shape and the model's repr, which names every layer
    and its arguments.
    """
    params = sum(p.numel() for p in model.parameters())
    key = hashlib.sha1(f"{torch.__version__}|{tuple(x.shape)}|{model!r}".encode()).hexdigest()[:16]
    path = Path(cache_dir) / "flops" / f"{key}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            return params, int(json.loads(path.read_text())["flops"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged entry is recounted and rewritten
    flops = count_flops(model, x)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, {"flops": flops, "input": list(x.shape), "torch": torch.__version__})
        except (OSError, WriteError):
            pass  # an unwritable cache only costs the next run a recount
    return params, flops


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops()


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
    kept: list[torch.Tensor] = []  # alive until counted, so no storage address is reused

    def pack(t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        kept.append(t)
        # Not `return t`: a saved output (ReLU keeps its own) would then hold itself
        # through its grad_fn, a cycle in C++ that gc cannot break, leaking the batch.

    def unpack(_: None) -> torch.Tensor:
        raise RuntimeError("saved_activation_bytes runs no backward")

    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out = loss(model(x))
    del out
    kept.clear()
    model.load_state_dict(buffers)
    model.train(was_training)
    return sum(storages.values())


class LiveTensorBytes(TorchDispatchMode):
    """The most bytes that tensors made by ops held at once, looked at after every op.

    Each storage counts once (views and in-place results share their input's) for as
    long as anything keeps it alive: a Python name, autograd's saved tensors, a
    gradient. Tensors made before the mode (the input batch) and the storages of
    `ignore` (parameters) are not counted. What an op allocates and frees inside
    itself (oneDNN workspaces) is not seen.
    """

    def __init__(self, ignore: Iterable[torch.Tensor] = ()):
        super().__init__()
        self.ignore = {StorageWeakRef(t.untyped_storage()).cdata for t in ignore}
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        # Freed storages first, so that an address reused by this op's output is counted anew.
        self.live = {k: v for k, v in self.live.items() if not v[0].expired()}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                ref = StorageWeakRef(t.untyped_storage())
                if ref.cdata not in self.ignore and ref.cdata not in self.live:
                    self.live[ref.cdata] = (ref, t.untyped_storage().nbytes())
        self.peak = max(self.peak, sum(n for _, n in self.live.values()))
        return out


def activation_memory(model: nn.Module, x: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, int]:
    """Activation bytes of one fp32 batch `x`, counted tensor by tensor on a CPU copy of the
    model (its weights, gradients and BatchNorm statistics stay as they were):

    - `saved`: what autograd keeps for backward after a training forward;
    - `train_peak`: the most held at once over a training forward and backward: the saved
      tensors, outputs nobody keeps (a BatchNorm output before a ReLU that is not in
      place) and the gradients, parameters' included;
    - `inference_peak`: the most held at once by an eval-mode forward under no_grad.

    All three count the input batch.

    These are what `ReLU(inplace=True)`, the block order or an upsampling mode change,
    independent of device and allocator (on a GPU, `memory/peak_mb` is the allocator's).
    """
    model = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).float().train()
    x = x.to("cpu", torch.float32, memory_format=torch.contiguous_format)
    saved = saved_activation_bytes(model, x, loss)  # the input batch included, which the first conv keeps
    with LiveTensorBytes(ignore=model.parameters()) as train:
        loss(model(x.clone())).backward()  # cloned inside, so the input batch counts here too
    model.eval()
    with torch.no_grad(), LiveTensorBytes(ignore=model.parameters()) as inference:
        model(x.clone())
    return {"saved": saved, "train_peak": train.peak, "inference_peak": inference.peak}

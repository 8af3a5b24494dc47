"""Optimizers and schedules: the lr each step is what the config says."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sampler.experiments.errors import ConfigError
from sampler.experiments.train.optim import SCHEDULES, build_optimizer, build_scheduler


def lrs(name: str, total: int = 100, per_epoch: int = 10, **kwargs) -> list[float]:
    opt = build_optimizer(nn.Linear(2, 2), "sgd", lr=1.0)
    sched = build_scheduler(opt, total, per_epoch, name, **kwargs)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_is_linear_then_the_shape_starts_at_the_peak() -> None:
    lr = lrs("cosine", warmup_epochs=1)
    assert lr[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert lr[10] == pytest.approx(1.0)
    assert lr[-1] < 0.01


def test_onecycle_rises_then_falls_to_the_final_ratio() -> None:
    lr = lrs("onecycle", pct_start=0.25, initial_lr_ratio=0.1, final_lr_ratio=0.0)
    peak = max(range(100), key=lr.__getitem__)
    assert lr[0] == pytest.approx(0.1) and peak == 25 and lr[25] == pytest.approx(1.0)
    assert lr[99] == pytest.approx(1 / 75, rel=1e-6)


def test_step_multiplies_at_milestones_and_constant_stays() -> None:
    lr = lrs("step", milestones=[0.5, 0.75], gamma=0.1)
    assert lr[49] == 1.0 and lr[50] == pytest.approx(0.1) and lr[75] == pytest.approx(0.01)
    assert set(lrs("constant")) == {1.0}


def test_weight_decay_skips_norms_and_biases() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = build_optimizer(model, "sgd", lr=0.1, weight_decay=0.01)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight)}
    assert isinstance(build_optimizer(model, "adamw", lr=0.1), torch.optim.AdamW)


@pytest.mark.parametrize("call,key", [
    (lambda: build_optimizer(nn.Linear(2, 2), "adam", lr=0.1), "optim.name"),
    (lambda: build_optimizer(nn.Linear(2, 2), "sgd", lr=-1), "optim.lr"),
    (lambda: build_optimizer(nn.Linear(2, 2), "sgd", lr=0.1, momentum=0.0, nesterov=True), "optim.nesterov"),
    (lambda: lrs("linear"), "sched.name"),
    # momentum first: -1 used to be blamed on nesterov, or reach torch's ValueError after the data loaded
    (lambda: build_optimizer(nn.Linear(2, 2), "sgd", lr=0.1, momentum=-1), "optim.momentum"),
    (lambda: build_optimizer(nn.Linear(2, 2), "sgd", lr=0.1, momentum=-1, nesterov=False), "optim.momentum"),
    (lambda: build_optimizer(nn.Linear(2, 2), "sgd", lr=0.1, momentum=1.0, nesterov=False), "optim.momentum"),
    (lambda: build_optimizer(nn.Linear(2, 2), "sgd", lr=0.1, momentum="high"), "optim.momentum"),
    (lambda: build_optimizer(nn.Linear(2, 2), "sgd", lr=0.1, weight_decay=-5), "optim.weight_decay"),
    (lambda: build_optimizer(nn.Linear(2, 2), "adamw", lr=0.1, weight_decay=-1e-4), "optim.weight_decay"),
    (lambda: build_optimizer(nn.Linear(2, 2), "adamw", lr=0.1, betas=[0.9, 1.0]), "optim.betas"),
    (lambda: build_optimizer(nn.Linear(2, 2), "adamw", lr=0.1, betas=0.9), "optim.betas"),
    (lambda: build_optimizer(nn.Linear(2, 2), "adamw", lr=0.1, eps=0), "optim.eps"),
    (lambda: lrs("onecycle", pct_start=2), "sched.pct_start"),  # the lr never reached its peak
    (lambda: lrs("onecycle", pct_start=1), "sched.pct_start"),  # ZeroDivisionError at the last step
    (lambda: lrs("onecycle", initial_lr_ratio=-0.1), "sched.initial_lr_ratio"),
    (lambda: lrs("cosine", final_lr_ratio=2), "sched.final_lr_ratio"),
    (lambda: lrs("step", gamma=10), "sched.gamma"),
    (lambda: lrs("step", milestones=[30, 60]), "sched.milestones"),  # epochs: the lr would never drop
    (lambda: build_optimizer(nn.Conv2d(2, 2, 1), "muon", lr=0.1, weight_decay=-1, batch_size=8),
     "optim.weight_decay"),
])
def test_bad_optim_values_name_the_key(call, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        call()
    assert err.value.key == key


def test_the_edges_of_the_optim_ranges_are_accepted() -> None:
    for kwargs in ({"momentum": 0.0, "nesterov": False, "weight_decay": 0.0}, {"momentum": 0.999}):
        assert isinstance(build_optimizer(nn.Linear(2, 2), "sgd", lr=0.1, **kwargs), torch.optim.SGD)
    assert build_optimizer(nn.Linear(2, 2), "adamw", lr=0.1, betas=[0.0, 0.5]).defaults["betas"] == (0.0, 0.5)
    assert lrs("onecycle", pct_start=0.0, final_lr_ratio=1.0)[0] == 1.0
    assert lrs("step", milestones=[0.0, 1.0], gamma=0.0)[0] == 0.0


def test_every_schedule_stays_within_the_peak() -> None:
    for name in SCHEDULES.names():
        lr = lrs(name, warmup_epochs=1)
        assert max(lr) <= 1.0 + 1e-9 and min(lr) >= 0.0, name

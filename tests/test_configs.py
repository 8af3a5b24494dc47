"""Every config file composes, and every model it describes builds (lightning-hydra-template style)."""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from sampler.experiments.train.model import make_model
from sampler.experiments.tools.config import compose
from sampler.experiments.tools.listing import experiment_presets

CONFIGS = Path(str(resources.files("sampler.configs")))
GROUPS = sorted(d.name for d in CONFIGS.iterdir() if d.is_dir() and d.name not in ("experiment", "hydra", "__pycache__"))


def group_options() -> list[tuple[str, str]]:
    return [(g, p.stem) for g in GROUPS for p in sorted((CONFIGS / g).glob("*.yaml"))]


@pytest.mark.parametrize("group,option", group_options(), ids=lambda v: str(v))
def test_every_group_option_composes_and_builds(group: str, option: str) -> None:
    cfg = compose([f"{group}={option}"])
    model, spec = make_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", experiment_presets())
def test_every_experiment_preset_composes_and_builds(name: str) -> None:
    cfg = compose([f"experiment={name}"])
    make_model(cfg)


def test_presets_exist() -> None:
    assert {"pool_max_vs_avg", "bn_vs_none", "block_order", "relu_inplace", "cifar10_fast"} <= set(experiment_presets())


def test_the_user_facing_keys_exist() -> None:
    cfg = compose([])
    for key in ("model.pool", "model.norm", "model.act", "model.order", "model.widths", "data.root",
                "data.subset", "trainer.epochs", "trainer.batch_size", "trainer.device", "seed"):
        node = cfg
        for part in key.split("."):
            assert part in node, key
            node = node[part]


LEAF = re.compile(r"^\s*[A-Za-z_][\w.]*:\s*[^\s#]")


def uncommented_leaves(text: str) -> list[str]:
    """Leaf `key: value` lines with no comment, outside `defaults:` and `hydra:` blocks."""
    missing, skip = [], False
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            skip = line.startswith(("hydra:", "defaults:"))
        if not skip and LEAF.match(line) and "#" not in line:
            missing.append(line.strip())
    return missing


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.rglob("*.yaml") if "hydra" not in p.parts),
                         ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_leaf_says_its_unit_or_choices(path: Path) -> None:
    """STYLE: every leaf has a trailing comment with its unit or allowed values."""
    assert not uncommented_leaves(path.read_text()), path.name


def test_the_comment_check_can_fail() -> None:
    assert uncommented_leaves("a: 1  # px\nb: 2\nhydra:\n  c: 3\n") == ["b: 2"]

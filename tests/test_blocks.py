"""blocks/: every registry entry builds and trains a step; validation names the key."""
from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
import torch
from torch import nn

from sampler.blocks import ACTS, NORMS, POOLS, ConfigError, build_encoder, build_model

ORDERS = [list(p) for p in itertools.permutations(["conv", "norm", "act", "pool"])]


def forward_backward(model: nn.Module, size: int = 32, batch: int = 4) -> torch.Tensor:
    x = torch.randn(batch, 3, size, size, requires_grad=True)
    out = model(x)
    out.float().pow(2).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    return out


@pytest.mark.parametrize("pool", POOLS.names())
@pytest.mark.parametrize("norm", NORMS.names())
@pytest.mark.parametrize("act", ACTS.names())
def test_every_pool_norm_act_builds_and_trains(pool: str, norm: str, act: str) -> None:
    model = build_model(widths=[8, 16], pool=pool, norm=norm, act=act, num_classes=7)
    out = forward_backward(model)
    assert out.shape == (4, 7)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: "-".join(o))
def test_every_order_builds_with_parts_in_that_order(order: list[str]) -> None:
    encoder = build_encoder(widths=[8, 16], convs_per_stage=2, order=order)
    last_unit = encoder[0][-1]
    assert list(dict(last_unit.named_children())) == order
    first_unit = encoder[0][0]
    assert list(dict(first_unit.named_children())) == [p for p in order if p != "pool"]
    out = forward_backward(nn.Sequential(encoder, nn.Flatten()))
    assert out.shape == (4, 16 * 8 * 8)


@pytest.mark.parametrize("order,norm,bias", [
    (["conv", "norm", "act", "pool"], "batch", False),
    (["conv", "pool", "norm", "act"], "batch", False),   # the pool commutes with a bias
    (["conv", "act", "norm", "pool"], "batch", True),    # the bias acts before the ReLU
    (["conv", "norm", "act", "pool"], "none", True),
])
def test_conv_bias_dropped_only_when_a_norm_follows(order: list[str], norm: str, bias: bool) -> None:
    encoder = build_encoder(widths=[8], order=order, norm=norm)
    assert (encoder[0][0].conv.bias is not None) is bias


def test_stage_shapes_and_out_channels() -> None:
    encoder = build_encoder(widths=[8, 16, 32], stem_width=4)
    feats = encoder.features(torch.randn(2, 3, 32, 32))
    assert [tuple(f.shape[1:]) for f in feats] == [(4, 32, 32), (8, 16, 16), (16, 8, 8), (32, 4, 4)]
    assert encoder.stage_channels == [4, 8, 16, 32] and encoder.out_channels == 32


def test_max_pool_halves_and_conv_pool_learns() -> None:
    x = torch.randn(1, 3, 32, 32)
    assert build_encoder(widths=[8], pool="max")(x).shape[-1] == 16
    learned = build_encoder(widths=[8], pool="conv")
    assert learned(x).shape[-1] == 16
    assert any(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in learned.modules())
    assert build_encoder(widths=[8], pool="none")(x).shape[-1] == 32


def test_norm_and_act_arguments_reach_the_modules() -> None:
    enc = build_encoder(widths=[8], norm="batch", norm_args={"momentum": 0.3, "affine": False, "num_groups": 2},
                        act="leaky_relu", act_args={"negative_slope": 0.2, "inplace": True})
    unit = enc[0][0]
    assert unit.norm.momentum == 0.3 and unit.norm.weight is None
    assert unit.act.negative_slope == 0.2 and unit.act.inplace
    assert build_encoder(widths=[8], norm="group", norm_args={"num_groups": 4})[0][0].norm.num_groups == 4


@pytest.mark.parametrize("kwargs,key,needle", [
    (dict(pool="maxx"), "pool", "avg, conv, max, none"),
    (dict(norm="bn"), "norm", "batch, group, instance, layer, none"),
    (dict(act="relu6"), "act", "gelu, leaky_relu, none, relu, silu"),
    (dict(order=["conv", "norm", "act"]), "order", "permutation"),
    (dict(order=["conv", "norm", "norm", "pool"]), "order", "permutation"),
    (dict(widths=[8, 16, 32, 64, 128, 256]), "widths", "after stage 6"),
    (dict(widths=[]), "widths", "non-empty"),
    (dict(norm="group", norm_args={"num_groups": 3}), "norm_args.num_groups", "do not divide"),
    (dict(norm_args={"eps": 0}), "norm_args.eps", "> 0"),
    (dict(norm="group", norm_args={"eps": -1e-5}), "norm_args.eps", "> 0"),
    (dict(norm="layer", norm_args={"eps": "small"}), "norm_args.eps", "> 0"),
    (dict(norm_args={"momentum": 5}), "norm_args.momentum", "[0, 1]"),
    (dict(norm="instance", norm_args={"momentum": -1}), "norm_args.momentum", "[0, 1]"),
    (dict(conv_args={"groups": 2}), "conv_args.groups", "do not divide"),
    (dict(conv_args={"kernal_size": 3}), "conv_args.kernal_size", "kernel_size"),
    (dict(pool_args={"kernel_size": 2, "padding": 2}), "pool_args.padding", "half"),
])
def test_bad_values_name_the_key_and_the_choices(kwargs: dict, key: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_encoder(**{"widths": [8, 16], **kwargs})
    assert err.value.key == key
    assert needle in err.value.message


def test_norm_momentum_may_be_null_or_any_weight_in_0_to_1() -> None:
    for momentum in (None, 0, 1, 0.5):
        assert build_encoder(widths=[8], norm_args={"momentum": momentum})[0][0].norm.momentum == momentum


def test_input_size_survives_exactly_five_halvings() -> None:
    build_encoder(widths=[4] * 5, input_size=32)  # 32 → 1
    with pytest.raises(ConfigError, match="after stage 6"):
        build_encoder(widths=[4] * 6, input_size=32)


def test_head_dropout_and_unknown_head() -> None:
    model = build_model(widths=[8], dropout=0.5)
    assert isinstance(model.head.dropout, nn.Dropout) and model.head.dropout.p == 0.5
    with pytest.raises(ConfigError) as err:
        build_model(widths=[8], head="mlp")
    assert err.value.key == "head.name" and "linear" in err.value.message


def test_init_weights_is_deterministic_under_a_seed() -> None:
    torch.manual_seed(3)
    a = build_model(widths=[8, 16])
    torch.manual_seed(3)
    b = build_model(widths=[8, 16])
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    bn = a.encoder[0][0].norm
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))


def test_blocks_is_a_plain_library_without_hydra() -> None:
    code = ("import sys; from sampler.blocks import build_model; build_model(widths=[8]); "
            "print(any(m.split('.')[0] in ('hydra', 'omegaconf') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pool_in_the_first_unit_runs_later_convs_on_the_pooled_map() -> None:
    enc = build_encoder(widths=[8, 16], convs_per_stage=2, order=["conv", "pool", "norm", "act"], pool_unit="first")
    assert list(dict(enc[0][0].named_children())) == ["conv", "pool", "norm", "act"]
    assert list(dict(enc[0][1].named_children())) == ["conv", "norm", "act"]
    shapes = []
    enc[0][1].conv.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape[-2:])))
    assert enc(torch.randn(1, 3, 32, 32)).shape[-1] == 8
    assert shapes == [(16, 16)]
    with pytest.raises(ConfigError) as err:
        build_encoder(widths=[8], pool_unit="middle")
    assert err.value.key == "pool_unit" and "first, last" in err.value.message


def test_flop_count_is_cached_per_architecture(tmp_path) -> None:
    from sampler.experiments.train.cost import count_cost, count_flops

    x = torch.zeros(1, 3, 32, 32)
    small, wide = build_model(widths=[8, 16]), build_model(widths=[16, 32])
    assert count_cost(small, x, tmp_path) == (sum(p.numel() for p in small.parameters()), count_flops(small, x))
    (entry,) = (tmp_path / "flops").iterdir()
    entry.write_text('{"flops": 123}')  # a later run reads the entry instead of counting again
    assert count_cost(build_model(widths=[8, 16]), x, tmp_path)[1] == 123
    assert count_cost(wide, x, tmp_path)[1] == count_flops(wide, x) != 123  # another net, another entry
    big = torch.zeros(1, 3, 64, 64)  # another input size, another entry
    assert count_cost(small, big, tmp_path)[1] == count_flops(small, big) != 123
    entry.write_text("not json")  # damaged: counted again and rewritten
    assert count_cost(small, x, tmp_path)[1] == count_flops(small, x)
    assert count_cost(small, x)[1] == count_flops(small, x)  # no cache dir: always counted


def test_counting_saved_activations_leaves_none_of_them_alive() -> None:
    # A pack hook that returned the tensor itself made a cycle through C++ for saved
    # outputs (a ReLU saves its own output), which gc cannot see: each call leaked one
    # batch of activations, 218 MB a job in a CamVid sweep run in one process.
    import gc

    from sampler.experiments.train.cost import activation_memory, saved_activation_bytes

    def activations() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects()
                   if type(o) is torch.Tensor and o.dim() == 4 and o.shape[0] == 4 and o.shape[1] in (8, 16))

    model = build_model(widths=[8, 16])
    before = activations()
    counted = [saved_activation_bytes(model, torch.randn(4, 3, 32, 32), lambda out: out.mean()) for _ in range(3)]
    assert counted[0] > 4 * 8 * 32 * 32 * 4 and counted == counted[:1] * 3
    assert activations() == before
    peaks = [activation_memory(model, torch.randn(4, 3, 32, 32), lambda out: out.mean()) for _ in range(3)]
    assert peaks == peaks[:1] * 3 and activations() == before


def test_live_tensor_bytes_sees_transients_views_and_in_place_results() -> None:
    from sampler.experiments.train.cost import LiveTensorBytes

    x = torch.ones(1024)  # 4 KiB, made before the mode: not counted
    with LiveTensorBytes() as out_of_place:
        a = x * 2
        b = a * 3  # a and b alive together: the transient an out-of-place op costs
        del a
        c = b.view(32, 32) + 1  # the view shares b's storage
        del b, c
    with LiveTensorBytes() as in_place:
        a = x * 2
        a.mul_(3).add_(1)
        del a
    assert (out_of_place.peak, in_place.peak) == (2 * 4096, 4096)


def test_activation_memory_by_hand_and_the_model_is_left_alone() -> None:
    from sampler.experiments.train.cost import activation_memory

    batch = 4 * 3 * 32 * 32 * 4  # bytes of the fp32 input
    unit = 4 * 8 * 32 * 32 * 4  # one 8-channel 32x32 map
    for inplace in (False, True):
        model = build_model(widths=[8], act_args={"inplace": inplace})
        before = {k: v.clone() for k, v in model.state_dict().items()}
        mem = activation_memory(model, torch.randn(4, 3, 32, 32), lambda out: out.mean())
        # Eval forward: the input, the conv output and BatchNorm's output are alive together
        # (the conv output until BatchNorm returns); an in-place ReLU comes after that peak.
        assert mem["inference_peak"] == batch + 2 * unit
        assert mem["train_peak"] >= mem["saved"] >= batch + 2 * unit  # input, conv output, ReLU output
        assert all(p.grad is None for p in model.parameters()) and model.training
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        # A trained model comes in whatever layout it trained in; the count is of the fp32 CPU copy.
        assert activation_memory(model.to(memory_format=torch.channels_last), torch.randn(4, 3, 32, 32),
                                 lambda out: out.mean()) == mem
    # Pooling before BatchNorm and ReLU normalises a 4x smaller map: less held at the peak.
    classic, pooled_first = (activation_memory(build_model(widths=[32, 64], order=order), torch.randn(16, 3, 32, 32),
                                               lambda out: out.mean())
                             for order in (["conv", "norm", "act", "pool"], ["conv", "pool", "norm", "act"]))
    assert pooled_first["train_peak"] < classic["train_peak"]
    assert pooled_first["inference_peak"] < classic["inference_peak"]


def test_receptive_field_by_hand_with_and_without_pooling() -> None:
    from sampler.experiments.tools.inspect import layer_table

    def fields(**kwargs) -> dict[str, tuple[int, int] | None]:
        rows = layer_table(build_model(widths=[16, 32], **kwargs), torch.zeros(1, 3, 32, 32))
        return {r["name"]: r["rf"] for r in rows}

    # 3x3 conv: 3; 2x2 pool: +1 = 4, stride 2; 3x3 conv on that map: +2*2 = 8; pool: +1*2 = 10.
    classic = fields()
    assert [classic[f"encoder.{s}.0.{p}"] for s in (0, 1) for p in ("conv", "pool")] == [(3, 3), (4, 4), (8, 8), (10, 10)]
    assert classic["encoder.0.0.norm"] == (3, 3) and classic["head.fc"] is None
    assert fields(pool="none")["encoder.1.0.conv"] == (5, 5)  # without pooling two 3x3 convs see 5 px
    assert fields(pool="avg") == classic
    assert fields(conv_args={"dilation": 2})["encoder.1.0.pool"] == (16, 16)  # 5, 6, 6 + 2*2*2 = 14, 16
    # SegNet's unpooling takes the encoder's indices through the pool module, so its
    # layers (and their receptive fields) are the same as for any other head.
    def segmenter_fields(upsample: str) -> dict[str, tuple[int, int] | None]:
        model = build_model(widths=[16, 32], head="decoder", upsample=upsample, num_classes=11)
        rows = layer_table(model, torch.zeros(1, 3, 32, 32))
        return {r["name"]: r["rf"] for r in rows if r["name"].startswith("encoder.")}

    assert segmenter_fields("unpool") == segmenter_fields("bilinear")
    assert segmenter_fields("unpool")["encoder.1.0.pool"] == (10, 10)



# ---------------------------------------------------------------- registries take names, classes, callables, None

def test_registries_take_a_name_a_class_a_callable_or_none() -> None:
    unit = build_encoder(widths=[8], norm=nn.BatchNorm2d, act=nn.SiLU, pool=None, norm_args={"momentum": 0.3})[0][0]
    assert isinstance(unit.norm, nn.BatchNorm2d) and unit.norm.num_features == 8 and unit.norm.momentum == 0.3
    assert isinstance(unit.act, nn.SiLU) and not hasattr(unit, "pool")  # None is the `none` entry
    custom = build_encoder(widths=[8], act=lambda channels, **_: nn.Tanh())[0][0]
    assert isinstance(custom.act, nn.Tanh)
    with pytest.raises(ConfigError) as err:
        build_encoder(widths=[8], act=3)
    assert err.value.key == "act" and "relu" in err.value.message


@pytest.mark.parametrize("section,kwargs", [
    ("norm_args", {"norm_args": {"momentun": 0.1}}),
    ("act_args", {"act_args": {"inplce": True}}),
    ("pool_args", {"pool_args": {"kernel": 2}}),
])
def test_unknown_args_are_refused_naming_the_valid_ones(section: str, kwargs: dict) -> None:
    with pytest.raises(ConfigError) as err:
        build_encoder(widths=[8], **kwargs)
    assert err.value.key.startswith(section + ".")
    assert "choose from" in err.value.message
    build_encoder(widths=[8], norm="batch", norm_args={"num_groups": 8})  # group's key, taken by some entry: fine


def test_unknown_head_args_are_refused_with_the_head_prefix() -> None:
    with pytest.raises(ConfigError) as err:
        build_model(widths=[8], dropuot=0.5)
    assert err.value.key == "head.dropuot" and "dropout" in err.value.message


def test_with_head_args_a_key_is_named_where_the_config_has_it() -> None:
    # make_model hands model.* as keywords and head.* as head_args: an unknown model.* key
    # is the stack's to refuse, not the head's, and a head.* key never reaches the stack.
    with pytest.raises(ConfigError) as err:
        build_model(widths=[8], pol="avg", head_args={})
    assert err.value.key == "model.pol" and err.value.message.startswith("no model key pol; the stack takes: ")
    assert {"pool", "widths", "init_scale"} <= set(err.value.message.split(": ", 1)[1].split(", "))
    with pytest.raises(ConfigError) as err:
        build_model(widths=[8], head_args={"widths": [16]})
    assert err.value.key == "head.widths" and "no head takes this argument" in err.value.message
    seg = build_model(widths=[16, 32], head="decoder", head_args={"upsample": "unpool", "skips": True},
                      num_classes=11)
    assert seg(torch.zeros(1, 3, 32, 32)).shape == (1, 11, 32, 32)


@pytest.mark.parametrize("act,gain", [("relu", 2 ** 0.5), ("gelu", 2 ** 0.5), ("none", 1.0),
                                      ("leaky_relu", (2 / (1 + 0.2 ** 2)) ** 0.5)])
def test_init_follows_the_configured_activation(act: str, gain: float) -> None:
    torch.manual_seed(0)
    model = build_model(widths=[256], act=act, act_args={"negative_slope": 0.2}, norm="none")
    conv = model.encoder[0][0].conv
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx(gain / fan_out ** 0.5, rel=0.03)


@pytest.mark.parametrize("scale", [0.25, 4.0])
def test_init_scale_multiplies_the_conv_and_linear_weights(scale: float) -> None:
    torch.manual_seed(0)
    base = build_model(widths=[8, 16])
    torch.manual_seed(0)
    scaled = build_model(widths=[8, 16], init_scale=scale)
    for (name, a), (_, b) in zip(base.named_parameters(), scaled.named_parameters()):
        expected = a * scale if name.endswith("weight") and a.ndim > 1 else a
        assert torch.allclose(b, expected), name


@pytest.mark.parametrize("value", [0, -1, True, "big"])
def test_a_bad_init_scale_is_refused(value) -> None:
    with pytest.raises(ConfigError) as err:
        build_model(widths=[8, 16], init_scale=value)
    assert err.value.key == "model.init_scale"

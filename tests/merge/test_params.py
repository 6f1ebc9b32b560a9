"""Parameter resolution: scalars, per-layer gradients, {filter, value} lists."""

import pytest

from graftkit.merge.params import interpolate, layer_index, resolve
from graftkit.merge.recipe import FilterValue


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("model.layers.3.self_attn.q_proj.weight", 3),
        ("transformer.h.11.attn.c_attn.weight", 11),
        ("bert.encoder.layer.0.output.dense.bias", 0),
        ("model.embed_tokens.weight", None),
        ("lm_head.weight", None),
        ("model.norm.weight", None),
    ],
)
def test_layer_index_reads_llama_gpt2_bert_names(name, layer):
    assert layer_index(name) == layer


def test_per_layer_list_is_piecewise_linear_over_layers():
    # 5 layers at t = 0, .25, .5, .75, 1 over a 3-point gradient [0, 1, 0]
    values = [interpolate([0.0, 1.0, 0.0], layer, 5) for layer in range(5)]
    assert values == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])


def test_per_layer_list_with_one_entry_per_layer_is_exact():
    assert [interpolate([0.1, 0.2, 0.7], i, 3) for i in range(3)] == pytest.approx([0.1, 0.2, 0.7])


def test_tensors_outside_layers_take_the_first_value():
    assert resolve([0.3, 0.9], "model.embed_tokens.weight", 4) == 0.3


def test_filters_first_match_wins_and_globs_work():
    value = [
        FilterValue(filter="self_attn", value=0.1),
        FilterValue(filter="*.mlp.*", value=0.2),
        FilterValue(value=0.5),
    ]
    assert resolve(value, "model.layers.0.self_attn.q_proj.weight", 2) == 0.1
    assert resolve(value, "model.layers.0.mlp.up_proj.weight", 2) == 0.2
    assert resolve(value, "model.norm.weight", 2) == 0.5


def test_filter_without_catch_all_falls_back_to_default():
    value = [FilterValue(filter="mlp", value=0.2)]
    assert resolve(value, "model.norm.weight", 2, default=0.7) == 0.7


def test_filter_value_may_be_a_per_layer_list():
    value = [FilterValue(filter="mlp", value=[0.0, 1.0])]
    assert resolve(value, "model.layers.1.mlp.up_proj.weight", 3) == pytest.approx(0.5)

from __future__ import annotations

import pytest
import torch
from tinylm import VOCAB, randomize_bridge, tiny_gpt2, tiny_llama

from graftkit.compose import Connection, CrossAttentionConnection, NormSpec, bridge_param_count, compose
from graftkit.errors import GraftError


@pytest.mark.parametrize(
    ("anchor_fn", "augment_fn"),
    [
        (lambda: tiny_llama(0), lambda: tiny_gpt2(3)),  # GPT-2 augment into a Llama anchor
        (
            lambda: tiny_gpt2(2, hidden=32, layers=4, heads=4),
            lambda: tiny_llama(5, hidden=16, layers=8, heads=2),
        ),
        (lambda: tiny_gpt2(2, hidden=32, layers=4, heads=4), lambda: tiny_gpt2(3)),
        (lambda: tiny_llama(0), lambda: tiny_llama(5, hidden=16, layers=8, heads=2)),
    ],
    ids=["gpt2-into-llama", "llama-into-gpt2", "gpt2-into-gpt2", "llama-into-llama"],
)
def test_untrained_bridge_reproduces_anchor_exactly(anchor_fn, augment_fn, tokens):
    anchor, augment = anchor_fn(), augment_fn()
    expected = anchor(tokens).logits
    model = compose(anchor, augment)
    assert torch.equal(model(tokens).logits, expected)
    # ... and the same bridge, once trained (non-zero), does change them: the wiring is live.
    randomize_bridge(model, scale=3.0)
    assert not torch.allclose(model(tokens).logits, expected, atol=1e-3)


def test_norm_type_follows_anchor(llama_anchor, gpt2_anchor, gpt2_augment):
    assert isinstance(compose(llama_anchor, gpt2_augment).bridge[0][0].q_norm, torch.nn.RMSNorm)
    assert isinstance(compose(gpt2_anchor, tiny_gpt2(3)).bridge[0][0].q_norm, torch.nn.LayerNorm)


def test_changing_later_tokens_never_changes_earlier_logits(llama_anchor, gpt2_augment, tokens):
    model = compose(llama_anchor, gpt2_augment)
    randomize_bridge(model, scale=3.0)
    base = model(tokens).logits
    for t in (0, 4, 9):
        changed = tokens.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 1) % VOCAB
        logits = model(changed).logits
        torch.testing.assert_close(logits[:, : t + 1], base[:, : t + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(logits[:, t + 1 :], base[:, t + 1 :], atol=1e-3)


def test_augment_padding_mask_changes_output(llama_anchor, gpt2_augment, tokens):
    model = compose(llama_anchor, gpt2_augment)
    randomize_bridge(model, scale=3.0)
    ones = torch.ones_like(tokens)
    aug_mask = ones.clone()
    aug_mask[:, :3] = 0
    full = model(tokens, attention_mask=ones).logits
    masked = model(tokens, attention_mask=ones, augment_attention_mask=aug_mask).logits
    assert not torch.allclose(full, masked, atol=1e-3)


def test_augment_padding_mask_reaches_cross_attention(llama_anchor, gpt2_augment, tokens):
    """Anchor positions whose every readable augment position is masked receive nothing from the
    bridge, so their logits are the anchor's own; later positions are not."""
    model = compose(llama_anchor, gpt2_augment)
    randomize_bridge(model, scale=3.0)
    aug_mask = torch.ones_like(tokens)
    aug_mask[:, :4] = 0
    alone = llama_anchor(tokens).logits
    logits = model(tokens, augment_attention_mask=aug_mask).logits
    assert torch.equal(logits[:, :4], alone[:, :4])
    assert not torch.allclose(logits[:, 4:], alone[:, 4:], atol=1e-3)


def test_cross_attention_ignores_masked_keys():
    torch.manual_seed(0)
    conn = CrossAttentionConnection(augment_dim=8, anchor_dim=16, num_heads=4, norm=NormSpec("rms", 1e-6))
    torch.nn.init.normal_(conn.o_proj.weight)
    hidden, aug = torch.randn(2, 5, 16), torch.randn(2, 5, 8)
    allowed = torch.ones(2, 5, 5, dtype=torch.bool)
    allowed[:, :, 2] = False
    k, v = conn.keys_values(aug)
    out = conn(hidden, k, v, allowed)
    aug2 = aug.clone()
    aug2[:, 2] += 10.0  # only a masked position changes
    k2, v2 = conn.keys_values(aug2)
    torch.testing.assert_close(conn(hidden, k2, v2, allowed), out)
    assert not torch.allclose(conn(hidden, k2, v2, torch.ones_like(allowed)), out)
    # A query with nothing to read gets exactly nothing, not NaN.
    none = torch.zeros_like(allowed)
    assert torch.equal(conn(hidden, k, v, none), hidden)


def test_frozen_models_and_state_dict_keys(llama_anchor, gpt2_augment):
    anchor_keys = list(llama_anchor.state_dict())
    model = compose(llama_anchor, gpt2_augment)
    assert all(k.startswith("bridge.") for k in model.state_dict())
    assert list(model.anchor.state_dict()) == anchor_keys
    assert not any(p.requires_grad for p in llama_anchor.parameters())
    assert not any(p.requires_grad for p in gpt2_augment.parameters())
    model.train()
    assert model.training and not llama_anchor.training and not gpt2_augment.training
    assert {id(p) for p in model.parameters()} == {id(p) for p in model.bridge_parameters()}


def test_training_step_changes_only_bridge(llama_anchor, gpt2_augment, tokens):
    before_anchor = {k: v.clone() for k, v in llama_anchor.state_dict().items()}
    before_aug = {k: v.clone() for k, v in gpt2_augment.state_dict().items()}
    model = compose(llama_anchor, gpt2_augment)
    before_bridge = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(tokens, labels=tokens).loss.backward()
    opt.step()
    for k, v in llama_anchor.state_dict().items():
        assert torch.equal(v, before_anchor[k]), k
    for k, v in gpt2_augment.state_dict().items():
        assert torch.equal(v, before_aug[k]), k
    assert all(p.grad is None for p in (*llama_anchor.parameters(), *gpt2_augment.parameters()))
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before_bridge[k])]
    assert any(k.endswith("o_proj.weight") for k in changed)


def test_loss_ignores_minus_100(llama_anchor, gpt2_augment, tokens):
    model = compose(llama_anchor, gpt2_augment)
    labels = tokens.clone()
    labels[:, :6] = -100
    logits = llama_anchor(tokens).logits[:, 5:-1]
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 6:].reshape(-1))
    torch.testing.assert_close(model(tokens, labels=labels).loss, expected)


def test_two_augments(llama_anchor, gpt2_augment, tokens):
    second = tiny_llama(9, hidden=16, layers=4, heads=2)
    model = compose(llama_anchor, [gpt2_augment, second], [None, [Connection(anchor_layer=1, augment_layer=3)]])
    assert [len(c) for c in model.connections] == [2, 1]
    assert torch.equal(model(tokens).logits, llama_anchor(tokens).logits)
    randomize_bridge(model, scale=3.0)
    both = model(tokens).logits
    with torch.no_grad():  # silence the second augment: the output must move
        model.bridge[1][0].o_proj.weight.zero_()
    assert not torch.allclose(model(tokens).logits, both, atol=1e-3)
    with pytest.raises(GraftError, match="one connection list"):
        compose(llama_anchor, [gpt2_augment, second], [Connection(anchor_layer=1, augment_layer=3)])
    count = bridge_param_count(model)
    assert len(count.per_augment) == 2 and count.bridge == sum(count.per_augment)


def test_mismatched_vocab_refused(llama_anchor):
    other = tiny_gpt2(3, vocab=VOCAB + 2)
    with pytest.raises(GraftError, match=rf"vocab_size {VOCAB + 2}.*vocab_size {VOCAB}"):
        compose(llama_anchor, other)


def test_bridge_param_count_is_exact(llama_anchor, gpt2_augment, gpt2_anchor):
    # Llama anchor (D_B = 32, RMSNorm), GPT-2 augment (D_A = 24), two connections.
    d_a, d_b = 24, 32
    per_conn = d_a * d_b + d_b + 4 * d_b * d_b + 2 * d_b
    count = bridge_param_count(compose(llama_anchor, gpt2_augment))
    assert count.bridge == 2 * per_conn
    assert count.anchor == sum(p.numel() for p in llama_anchor.parameters())
    assert count.percent_of_anchor == pytest.approx(100 * 2 * per_conn / count.anchor)
    # LayerNorm anchor: two norms of 2·D_B each.
    ln = bridge_param_count(compose(gpt2_anchor, tiny_gpt2(3)))
    assert ln.bridge == 2 * (d_a * d_b + d_b + 4 * d_b * d_b + 4 * d_b)


def test_hooks_are_removed_even_on_error(llama_anchor, gpt2_augment, tokens):
    model = compose(llama_anchor, gpt2_augment)
    layers = [*model.anchor_stack.layers, *model.augment_stacks[0].layers]
    model(tokens)
    assert all(not layer._forward_hooks for layer in layers)
    with pytest.raises(Exception):  # noqa: B017 - any error inside the models
        model(tokens + 10 * VOCAB)
    assert all(not layer._forward_hooks for layer in layers)


def test_fused_causal_path_matches_masked_path():
    """``allowed=None`` (fused causal kernel) equals the explicit causal mask it stands for."""
    from graftkit.compose import allowed_positions

    torch.manual_seed(0)
    conn = CrossAttentionConnection(augment_dim=8, anchor_dim=16, num_heads=4, norm=NormSpec("layer", 1e-5))
    torch.nn.init.normal_(conn.o_proj.weight)
    hidden, aug = torch.randn(2, 6, 16), torch.randn(2, 6, 8)
    k, v = conn.keys_values(aug)
    slots = torch.arange(6)
    explicit = conn(hidden, k, v, allowed_positions(slots, slots, torch.ones(2, 6)))
    torch.testing.assert_close(conn(hidden, k, v, None), explicit)
    assert not torch.allclose(conn(hidden, k, v, torch.ones(2, 6, 6, dtype=torch.bool)), explicit)

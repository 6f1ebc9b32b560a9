"""Training for encoder-mode decoding: the prompt-only augment mask, and a recipe that uses it."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from test_compose_train import recipe
from tinylm import VOCAB, randomize_bridge

from graftkit.compose import compose
from graftkit.compose.data import Example, prompt_mask
from graftkit.compose.train import model_batch, train_bridge
from graftkit.hf_compat import output_cache

PROMPT, COMPLETION = 5, 4


def test_prompt_mask_keeps_real_unlabelled_tokens():
    batch = model_batch([Example([1, 2, 3, 4], [-100, -100, 3, 4]), Example([1, 2], [-100, 2])], pad_id=0)
    assert prompt_mask(batch).tolist() == [[1, 1, 0, 0], [1, 0, 0, 0]]
    encoder = model_batch([Example([1, 2, 3], [-100, 2, 3])], pad_id=0, encoder_mode=True)
    assert encoder["augment_attention_mask"].tolist() == [[1, 0, 0]]
    assert "augment_attention_mask" not in model_batch([Example([1, 2, 3], [-100, 2, 3])], pad_id=0)


def test_prompt_mask_forward_equals_encoder_mode_decoding(llama_anchor, gpt2_augment):
    """Teacher-forced logits with the prompt-only augment mask are the logits of cached encoder-mode
    steps (the augments read the prompt, then only the anchor reads each new token)."""
    model = compose(llama_anchor, gpt2_augment)
    randomize_bridge(model, scale=3.0)
    ids = torch.randint(0, VOCAB, (2, PROMPT + COMPLETION), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :PROMPT] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    with torch.no_grad():
        taught = model(ids, attention_mask=batch["attention_mask"], augment_attention_mask=prompt_mask(batch)).logits
        paper = model(ids, attention_mask=batch["attention_mask"]).logits
        out = model(ids[:, :PROMPT], attention_mask=torch.ones_like(ids[:, :PROMPT]), use_cache=True)
        steps = [out.logits]
        for t in range(PROMPT, PROMPT + COMPLETION):
            mask = torch.ones_like(ids[:, : t + 1])
            out = model(
                ids[:, t : t + 1],
                attention_mask=mask,
                past_key_values=output_cache(out),
                use_cache=True,
                update_augments=False,
            )
            steps.append(out.logits)
    cached = torch.cat(steps, dim=1)
    torch.testing.assert_close(taught, cached, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(paper[:, PROMPT:], cached[:, PROMPT:], atol=1e-3)  # the mask matters


def test_encoder_mode_recipe_trains_another_bridge(workspace):
    paper = load_file(str(train_bridge(recipe(workspace, out="paper")) / "bridge.safetensors"))
    encoder_recipe = {**recipe(workspace, out="encoder"), "encoder_mode": True}
    encoder = load_file(str(train_bridge(encoder_recipe) / "bridge.safetensors"))
    assert paper.keys() == encoder.keys()
    assert any(not torch.equal(paper[k], encoder[k]) for k in paper)

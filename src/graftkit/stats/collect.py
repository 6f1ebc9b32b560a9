"""The statistics pass itself: run a model on examples and accumulate per-tensor statistics.

Pure torch on an ``nn.Module`` and batches; no files (see :mod:`graftkit.stats.run` for those).

- ``fisher``: the diagonal (empirical) Fisher of each parameter, ``F = mean_n (∂ log p(y_n | x_n) / ∂θ)²``
  with ``y_n`` the gold answer, one example at a time (per-example gradients need a batch of 1).
- ``regmean``: the Gram matrix ``G = XᵀX`` of the inputs of every ``nn.Linear``, summed over every
  token of every example, keyed ``<module name>.weight``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

KINDS = ("fisher", "regmean")
IGNORE = -100
"""Label of positions without loss (prompt), as :func:`graftkit.zoo.data.encode_examples` writes it."""


@dataclass
class Measured:
    """What one pass measured.

    Attributes:
        tensors: kind → parameter or weight name (as the model names it) → statistic.
        examples: examples seen.
        tokens: input tokens seen (the rows the Grams sum over).
        answer_tokens: tokens the log-likelihood sums over.
    """

    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    examples: int = 0
    tokens: int = 0
    answer_tokens: int = 0


@contextmanager
def linear_input_grams(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """While inside, add ``XᵀX`` of every ``nn.Linear``'s input to a float64 running sum.

    Yields the dict the sums land in (``<module name>.weight`` → (in, in)); the hooks are
    removed on exit. A module called several times per forward sums every call's inputs.
    """
    grams: dict[str, torch.Tensor] = {}

    def hook_for(key: str):
        def hook(module: nn.Linear, args: tuple) -> None:
            x = args[0].detach().reshape(-1, module.in_features).double()  # (tokens, in)
            if key in grams:
                grams[key].addmm_(x.T, x)
            else:
                grams[key] = x.T @ x  # (in, in)

        return hook

    handles = [
        module.register_forward_pre_hook(hook_for(f"{name}.weight"))
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
    ]
    try:
        yield grams
    finally:
        for handle in handles:
            handle.remove()


def answer_loglik(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``Σ_t log p(labels[t] | tokens < t)`` over the labelled positions, in float32.

    Args:
        logits: (B, T, V) next-token logits (position t predicts token t + 1).
        labels: (B, T) token ids at the scored positions, ``-100`` elsewhere.

    Returns:
        A scalar: the summed log-likelihood of every labelled token.
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    target = labels[:, 1:]  # (B, T-1)
    picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return picked[target != IGNORE].sum()


def collect(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], kinds: Sequence[str]) -> Measured:
    """Run ``model`` on every batch and accumulate the statistics of ``kinds``.

    Args:
        model: a causal LM returning ``.logits``; put in eval mode here; its gradients are
            cleared afterwards.
        batches: ``input_ids``, ``attention_mask``, ``labels``, each (1, T), on the model's device.
        kinds: a subset of :data:`KINDS`.

    Returns:
        The statistics: Fisher entries per parameter (only those a gradient reached), Grams
        per linear weight; float32, on the model's device.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {list(kinds)}")
    model.eval()
    want_fisher = "fisher" in kinds
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    fisher: dict[str, torch.Tensor] = {}
    measured = Measured()
    with ExitStack() as stack:
        grams = stack.enter_context(linear_input_grams(model)) if "regmean" in kinds else None
        for batch in batches:
            if batch["input_ids"].shape[0] != 1:
                raise ValueError("the statistics pass takes one example per batch (per-example gradients)")
            model.zero_grad(set_to_none=True)
            with torch.set_grad_enabled(want_fisher):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            if want_fisher:
                answer_loglik(logits, batch["labels"]).backward()
                for name, p in params:
                    if p.grad is not None:
                        square = p.grad.detach().float().square()  # (S)
                        fisher[name] = fisher[name].add_(square) if name in fisher else square
            measured.examples += 1
            measured.tokens += int(batch["attention_mask"].sum())
            measured.answer_tokens += int((batch["labels"][:, 1:] != IGNORE).sum())
    model.zero_grad(set_to_none=True)
    if want_fisher:
        measured.tensors["fisher"] = {name: f.div_(max(measured.examples, 1)) for name, f in fisher.items()}
    if grams is not None:
        measured.tensors["regmean"] = {name: g.float() for name, g in grams.items()}
    return measured

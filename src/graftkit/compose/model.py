"""The composed model: a frozen anchor, frozen augments and the trainable bridge between them.

The frozen models are held, not registered as submodules: the composed model's ``state_dict`` and
``parameters`` are the bridge Θ_C alone, and each frozen model keeps its own state-dict keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from graftkit.compose.bridge import CrossAttentionConnection, allowed_positions
from graftkit.compose.discovery import DecoderStack, discover
from graftkit.compose.hooks import capture_outputs, rewrite_outputs
from graftkit.compose.wiring import Connection, default_connections, validate_connections
from graftkit.errors import GraftError
from graftkit.hf_compat import cache_field, output_cache, with_cache


@dataclass
class ComposedCache:
    """Decoding state: each model's own KV cache plus the bridge's cached augment keys/values.

    Attributes:
        anchor: the anchor's Hugging Face cache.
        augments: each augment's Hugging Face cache.
        keys_values: per augment, per connection, ``(keys, values)`` of shape ``(B, H, S, hd)`` —
            the projected augment states of the ``S`` tokens the augment has read.
        augment_mask: per augment, ``(B, S)`` padding mask of those tokens.
        length: tokens the anchor has read.
    """

    anchor: Any = None
    augments: list[Any] = field(default_factory=list)
    keys_values: list[list[tuple[Tensor, Tensor]]] = field(default_factory=list)
    augment_mask: list[Tensor] = field(default_factory=list)
    length: int = 0


def positions_from_mask(mask: Tensor) -> Tensor:
    """Position ids that skip padding (left padding included): ``(B, T)`` from a ``(B, T)`` mask."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _freeze(model: nn.Module) -> None:
    model.requires_grad_(False)
    model.eval()


class ComposedModel(nn.Module):
    """An anchor LM reading one or more augment LMs through CALM cross-attention bridges.

    Build it with :func:`compose`. ``self.bridge[a][c]`` is the connection ``c`` of augment ``a``.

    Args:
        anchor: the frozen causal LM that produces the logits.
        augments: frozen causal LMs read through the bridge (same vocabulary as the anchor).
        connections: one validated list of :class:`Connection` per augment.
    """

    def __init__(
        self, anchor: nn.Module, augments: Sequence[nn.Module], connections: Sequence[Sequence[Connection]]
    ) -> None:
        super().__init__()
        if not augments:
            raise GraftError("compose() needs at least one augmenting model.")
        if len(connections) != len(augments):
            raise GraftError(f"{len(augments)} augments but {len(connections)} connection lists.")
        anchor_stack = discover(anchor)
        stacks = [discover(m) for m in augments]
        for a, st in enumerate(stacks):
            if st.vocab_size != anchor_stack.vocab_size:
                raise GraftError(
                    f"augment {a} has vocab_size {st.vocab_size} but the anchor has vocab_size "
                    f"{anchor_stack.vocab_size}: both models must read the same tokens, so they need the "
                    "same tokenizer. Pick an augment trained with the anchor's tokenizer."
                )
        self.connections: list[list[Connection]] = [
            validate_connections(c, anchor_stack.num_layers, st.num_layers, augment=a)
            for a, (c, st) in enumerate(zip(connections, stacks, strict=True))
        ]
        for m in (anchor, *augments):
            _freeze(m)
        # Plain attributes (a tuple is not registered): the frozen weights stay out of state_dict().
        self._frozen: tuple[nn.Module, ...] = (anchor, *augments)
        self._stacks: tuple[DecoderStack, ...] = (anchor_stack, *stacks)
        param = next(anchor.parameters())
        self.bridge = nn.ModuleList(
            nn.ModuleList(
                CrossAttentionConnection(
                    st.hidden_size, anchor_stack.hidden_size, anchor_stack.num_heads, anchor_stack.norm
                )
                for _ in conns
            )
            for st, conns in zip(stacks, self.connections, strict=True)
        ).to(param.device)

    # -- the frozen models -------------------------------------------------------------------------
    @property
    def anchor(self) -> nn.Module:
        return self._frozen[0]

    @property
    def augments(self) -> tuple[nn.Module, ...]:
        return self._frozen[1:]

    @property
    def anchor_stack(self) -> DecoderStack:
        return self._stacks[0]

    @property
    def augment_stacks(self) -> tuple[DecoderStack, ...]:
        return self._stacks[1:]

    def bridge_parameters(self) -> Iterator[nn.Parameter]:
        """The trainable parameters Θ_C (the same as :meth:`parameters`)."""
        return self.bridge.parameters()

    def _apply(self, fn: Callable, recurse: bool = True) -> ComposedModel:
        # .to() / .cuda() / .half() move the frozen models with the bridge.
        super()._apply(fn, recurse)
        for m in self._frozen:
            m._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> ComposedModel:
        super().train(mode)
        for m in self._frozen:
            m.eval()  # frozen models never run dropout
        return self

    # -- forward ------------------------------------------------------------------------------------
    def _augment_keys_values(
        self,
        input_ids: Tensor,
        mask: Tensor | None,
        past: ComposedCache | None,
        use_cache: bool,
    ) -> tuple[list[Any], list[list[tuple[Tensor, Tensor]]]]:
        """Run every augment over ``input_ids`` and extend the bridge's keys/values with them."""
        caches, kvs = [], []
        positions = None if mask is None else positions_from_mask(mask)[:, -input_ids.shape[1] :]
        for a, (model_stack, conns, bridge) in enumerate(
            zip(self.augment_stacks, self.connections, self.bridge, strict=True)
        ):
            wanted = {c.augment_layer for c in conns}
            # The augment is frozen and nothing upstream of it trains: no graph needed.
            with torch.no_grad(), capture_outputs(model_stack.layers, wanted) as hidden:
                out = model_stack.backbone(
                    input_ids=input_ids,
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=use_cache,
                    **with_cache(model_stack.backbone, past.augments[a] if past is not None else None),
                )
            caches.append(output_cache(out) if use_cache else None)
            per_conn = []
            for c, (conn, module) in enumerate(zip(conns, bridge, strict=True)):
                k, v = module.keys_values(hidden[conn.augment_layer])  # (B, H, T, hd) each
                if past is not None:  # projections are per position, so caching them is exact
                    k = torch.cat([past.keys_values[a][c][0], k], dim=2)
                    v = torch.cat([past.keys_values[a][c][1], v], dim=2)
                per_conn.append((k, v))
            kvs.append(per_conn)
        return caches, kvs

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        *,
        augment_attention_mask: Tensor | None = None,
        past_key_values: ComposedCache | None = None,
        use_cache: bool = False,
        update_augments: bool = True,
    ) -> CausalLMOutputWithPast:
        """Logits of the anchor reading the augments through the bridge.

        Args:
            input_ids: ``(B, T)`` tokens, read by the anchor and by every augment.
            attention_mask: ``(B, past + T)`` 1 for real tokens, 0 for padding. Position ids are
                derived from it (padding is skipped), for every model.
            labels: ``(B, T)`` next-token targets, -100 to ignore; the loss is the shifted mean CE.
            augment_attention_mask: ``(B, S)`` padding mask of the augment sequence, defaults to
                ``attention_mask``. It masks the augments' own attention and the bridge's keys.
            past_key_values: a :class:`ComposedCache` from a previous call with ``use_cache=True``.
            use_cache: return an updated :class:`ComposedCache` in ``past_key_values``.
            update_augments: False keeps the augments on what they have read so far (encoder mode:
                only the prompt); requires ``past_key_values``.

        Returns:
            ``CausalLMOutputWithPast`` with ``logits`` ``(B, T, V)``, ``loss`` and the ``ComposedCache``
            in its cache field (``cache``; ``past_key_values`` before transformers 5: read it with
            :func:`graftkit.hf_compat.output_cache`). This method keeps the name ``past_key_values``.
        """
        past = past_key_values
        past_len = past.length if past is not None else 0
        batch, length = input_ids.shape
        if not update_augments and past is None:
            raise GraftError("update_augments=False needs past_key_values holding what the augments read.")
        aug_mask = augment_attention_mask if augment_attention_mask is not None else attention_mask

        if update_augments:
            aug_caches, kvs = self._augment_keys_values(input_ids, aug_mask, past, use_cache)
            full = aug_mask if aug_mask is not None else input_ids.new_ones(batch, past_len + length)
            key_masks = [full] * len(self.augments)
        else:
            aug_caches, kvs, key_masks = past.augments, past.keys_values, past.augment_mask

        # Anchor position t (sequence index past_len + t) reads augment positions s ≤ t that are not padding.
        query_slots = torch.arange(past_len, past_len + length, device=input_ids.device)
        per_layer: dict[int, list[tuple[CrossAttentionConnection, Tensor, Tensor, Tensor | None]]] = {}
        for conns, bridge, per_conn, key_mask in zip(self.connections, self.bridge, kvs, key_masks, strict=True):
            allowed = None  # None: same positions, no padding -> plain causal attention (fused kernels)
            if past_len > 0 or key_mask.shape[1] != length or not bool(key_mask.all()):
                key_slots = torch.arange(key_mask.shape[1], device=input_ids.device)
                allowed = allowed_positions(query_slots, key_slots, key_mask)  # (B, T, S)
            for conn, module, (k, v) in zip(conns, bridge, per_conn, strict=True):
                per_layer.setdefault(conn.anchor_layer, []).append((module, k, v, allowed))

        def rewrite(parts: list) -> Callable[[Tensor], Tensor]:
            def fn(hidden: Tensor) -> Tensor:  # several augments on one layer apply in augment order
                for module, k, v, allowed in parts:
                    hidden = module(hidden, k, v, allowed)
                return hidden

            return fn

        positions = None if attention_mask is None else positions_from_mask(attention_mask)[:, -length:]
        with rewrite_outputs(self.anchor_stack.layers, {j: rewrite(p) for j, p in per_layer.items()}):
            out = self.anchor(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=positions,
                use_cache=use_cache,
                **with_cache(self.anchor, past.anchor if past is not None else None),
            )

        loss = None
        if labels is not None:
            logits = out.logits[:, :-1].float()
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
        cache = None
        if use_cache:
            cache = ComposedCache(output_cache(out), list(aug_caches), kvs, key_masks, past_len + length)
        return CausalLMOutputWithPast(loss=loss, logits=out.logits, **{cache_field(CausalLMOutputWithPast): cache})

    def save_bridge(self, path: str | Path, **kwargs: Any) -> Path:
        """See :func:`graftkit.compose.files.save_bridge`."""
        from graftkit.compose.files import save_bridge

        return save_bridge(self, path, **kwargs)

    def generate(self, input_ids: Tensor, max_new_tokens: int, **kwargs: Any) -> Tensor:
        """See :func:`graftkit.compose.generate.generate`."""
        from graftkit.compose.generate import generate

        return generate(self, input_ids, max_new_tokens, **kwargs)


def compose(
    anchor: nn.Module,
    augments: nn.Module | Sequence[nn.Module],
    connections: Sequence[Connection] | Sequence[Sequence[Connection] | None] | None = None,
) -> ComposedModel:
    """Attach a fresh (zero-output) CALM bridge from ``augments`` into ``anchor``.

    Both kinds of model are frozen in place (``requires_grad=False``, eval mode).

    Args:
        anchor: a Hugging Face causal LM.
        augments: one causal LM or a list of them, sharing the anchor's vocabulary.
        connections: ``None`` for the paper's default wiring; for one augment, a list of
            :class:`Connection`; for several, one list (or ``None``) per augment.

    Raises:
        GraftError: mismatched vocabularies, out-of-range or repeated layers, unfindable layers.
    """
    many = isinstance(augments, Sequence) and not isinstance(augments, nn.Module)
    models = list(augments) if many else [augments]
    if connections is None:
        per_aug: list[Sequence[Connection] | None] = [None] * len(models)
    elif many:
        per_aug = list(connections)  # type: ignore[arg-type]
        if any(isinstance(c, Connection) for c in per_aug):
            raise GraftError(
                f"With {len(models)} augments, give one connection list (or None) per augment, e.g. "
                "[[Connection(...)], None]."
            )
        if len(per_aug) != len(models):
            raise GraftError(f"{len(models)} augments but {len(per_aug)} connection lists; give one per augment.")
    else:
        per_aug = [connections]  # type: ignore[list-item]
    n_anchor = discover(anchor).num_layers
    resolved = [
        list(c) if c is not None else default_connections(n_anchor, discover(m).num_layers)
        for c, m in zip(per_aug, models, strict=True)
    ]
    return ComposedModel(anchor, models, resolved)

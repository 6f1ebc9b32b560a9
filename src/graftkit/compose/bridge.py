"""One CALM connection: project augment states, cross-attend to them from the anchor, add back.

Bansal et al., "LLM Augmented LLMs: Expanding Capabilities through Composition", ICLR 2024, §3.2:
``H_B ← H_B + f_cross(f_proj(H_A), H_B)``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from graftkit.compose.discovery import NormSpec


class CrossAttentionConnection(nn.Module):
    """``f_proj`` (D_A → D_B) then multi-head cross-attention with the anchor's head count.

    Keys and values are computed per position from the augment states, so they can be cached and
    extended token by token (:meth:`keys_values`), and attention is a separate step (:meth:`forward`).
    The output projection starts at zero: an untrained connection adds exactly nothing.

    Args:
        augment_dim: D_A, the augment's hidden size.
        anchor_dim: D_B, the anchor's hidden size.
        num_heads: the anchor's attention head count (must divide D_B).
        norm: the anchor's normalisation type, applied to queries and to projected augment states.
    """

    def __init__(self, augment_dim: int, anchor_dim: int, num_heads: int, norm: NormSpec) -> None:
        super().__init__()
        if anchor_dim % num_heads:
            raise ValueError(f"anchor hidden size {anchor_dim} is not divisible by {num_heads} heads")
        self.num_heads, self.head_dim = num_heads, anchor_dim // num_heads
        self.proj = nn.Linear(augment_dim, anchor_dim)  # f_proj
        self.kv_norm = norm.build(anchor_dim)
        self.q_norm = norm.build(anchor_dim)
        self.q_proj = nn.Linear(anchor_dim, anchor_dim, bias=False)
        self.kv_proj = nn.Linear(anchor_dim, 2 * anchor_dim, bias=False)  # keys and values in one matmul
        self.o_proj = nn.Linear(anchor_dim, anchor_dim, bias=False)
        nn.init.zeros_(self.o_proj.weight)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)

    def keys_values(self, augment_hidden: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of augment states ``(B, S, D_A)``: two ``(B, H, S, hd)`` tensors."""
        x = augment_hidden.to(self.proj.weight.dtype)
        kv = self.kv_proj(self.kv_norm(self.proj(x)))  # (B, S, 2·D_B)
        k, v = kv.chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(self, hidden: Tensor, keys: Tensor, values: Tensor, allowed: Tensor | None) -> Tensor:
        """Anchor states after the connection.

        Args:
            hidden: anchor states ``(B, T, D_B)`` leaving the connected block.
            keys, values: from :meth:`keys_values`, ``(B, H, S, hd)``.
            allowed: ``(B, T, S)`` bool, True where query t may read augment position s (causal and
                not padding). A query with no allowed position receives nothing. ``None`` means
                ``S == T`` over the same positions with no padding: plain causal attention, which
                uses the fused causal kernels.

        Returns:
            ``hidden + cross_attention(...)``, in ``hidden``'s dtype, ``(B, T, D_B)``.
        """
        q = self._heads(self.q_proj(self.q_norm(hidden.to(self.q_proj.weight.dtype))))  # (B, H, T, hd)
        if allowed is None:
            attn = F.scaled_dot_product_attention(q, keys.to(q.dtype), values.to(q.dtype), is_causal=True)
            attn = attn.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[1], -1)  # (B, T, D_B)
            return hidden + self.o_proj(attn).to(hidden.dtype)
        any_key = allowed.any(dim=-1, keepdim=True)  # (B, T, 1)
        # A row with no key would softmax to NaN, and 0 * NaN is NaN even behind a zero o_proj:
        # open such rows to every key, then drop their result.
        mask = (allowed | ~any_key).unsqueeze(1)  # (B, 1, T, S)
        attn = F.scaled_dot_product_attention(q, keys.to(q.dtype), values.to(q.dtype), attn_mask=mask)
        attn = attn.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[1], -1)  # (B, T, D_B)
        out = self.o_proj(attn * any_key.to(attn.dtype))
        return hidden + out.to(hidden.dtype)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, head_dim={self.head_dim}"


def allowed_positions(query_slots: Tensor, key_slots: Tensor, key_mask: Tensor) -> Tensor:
    """Which augment positions each anchor position may read: ``(B, T, S)`` bool.

    Args:
        query_slots: ``(T,)`` sequence index of each anchor position being computed.
        key_slots: ``(S,)`` sequence index of each augment position (its state is from that token).
        key_mask: ``(B, S)`` augment padding mask, 1/True for real tokens.
    """
    causal = key_slots.unsqueeze(0) <= query_slots.unsqueeze(1)  # (T, S): no peeking at later tokens
    return causal.unsqueeze(0) & key_mask.bool().unsqueeze(1)

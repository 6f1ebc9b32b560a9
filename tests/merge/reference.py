"""A plain, slow, line-by-line implementation of specs/methods.md.

The end-to-end tests compare graftkit's streamed, optimised merges against this, tensor by
tensor. It shares nothing with ``graftkit.methods`` except the seeded uniform draws.
"""

from __future__ import annotations

import math

import torch


def linear(xs, ws, normalize=True):
    total = sum(w * x for w, x in zip(ws, xs, strict=True))
    return total / sum(ws) if normalize else total


def task_arithmetic(b, xs, ws, lam=1.0):
    return b + lam * sum(w * (x - b) for w, x in zip(ws, xs, strict=True))


def trim(d, density):
    flat = d.flatten()
    k = max(1, math.floor(density * flat.numel()))
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.abs().argsort(descending=True, stable=True)[:k]] = True
    return torch.where(keep, flat, torch.zeros_like(flat)).reshape(d.shape)


def elect_and_mean(ds, ws):
    weighted = sum(w * d for w, d in zip(ws, ds, strict=True))
    sign = torch.where(weighted >= 0, 1.0, -1.0)
    num = torch.zeros_like(ds[0])
    den = torch.zeros_like(ds[0])
    for w, d in zip(ws, ds, strict=True):
        agree = (d != 0) & (torch.sign(d) == sign)
        num += torch.where(agree, w * d, 0.0)
        den += torch.where(agree, torch.full_like(d, w), 0.0)
    return torch.where(den != 0, num / torch.where(den != 0, den, 1.0), 0.0)


def ties(b, xs, ws, densities, lam=1.0):
    ds = [trim(x - b, dens) for x, dens in zip(xs, densities, strict=True)]
    return b + lam * elect_and_mean(ds, ws)


def dare_delta(d, density, keep_mask):
    return torch.where(keep_mask, d / density, torch.zeros_like(d))


def slerp(x0, x1, t):
    u0, u1 = x0.flatten(), x1.flatten()
    n0, n1 = u0.norm(), u1.norm()
    if n0 < 1e-8 or n1 < 1e-8:
        return (1 - t) * x0 + t * x1
    cos = float((u0 / n0) @ (u1 / n1))
    if abs(cos) > 0.9995:
        return (1 - t) * x0 + t * x1
    omega = math.acos(cos)
    return math.sin((1 - t) * omega) / math.sin(omega) * x0 + math.sin(t * omega) / math.sin(omega) * x1


def ties_model_scope(base, experts, ws, densities, lam=1.0):
    """TIES with the trim ranked over every tensor of each expert (tensor-name order, then
    row-major, breaks ties). ``base`` and each of ``experts`` are name → tensor dicts."""
    names = sorted(base)
    trimmed = []
    for expert, density in zip(experts, densities, strict=True):
        flat = torch.cat([(expert[n] - base[n]).flatten() for n in names])
        k = max(1, math.floor(density * flat.numel()))
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep[flat.abs().argsort(descending=True, stable=True)[:k]] = True
        kept = torch.where(keep, flat, torch.zeros_like(flat))
        sizes = [base[n].numel() for n in names]
        trimmed.append({n: part.reshape(base[n].shape) for n, part in zip(names, kept.split(sizes), strict=True)})
    return {n: base[n] + lam * elect_and_mean([t[n] for t in trimmed], ws) for n in names}


def breadcrumbs(d, density, gamma):
    """Keep k = max(1, floor(density n)) entries just below the floor(gamma n) largest |d|; the
    outliers give way when both exceed n (density holds)."""
    flat = d.flatten()
    n = flat.numel()
    k = max(1, math.floor(density * n))
    top = min(math.floor(gamma * n), n - k)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.abs().argsort(descending=True, stable=True)[top : top + k]] = True
    return torch.where(keep, flat, torch.zeros_like(flat)).reshape(d.shape)

"""Flow matching, one convention for the whole project: t = 1 is noise, t = 0 is data.

    x_t = t * eps + (1 - t) * a        u_t = eps - a        (so dx/dt = u_t, and Euler runs t from 1 to 0)

This is the convention of openpi (the opposite of the pi0 paper's). Training draws t ~ Beta(1.5, 1) (more weight
on the noisy end), scaled into [0.001, 1]. The loss is a mean squared error over real entries only: padded
chunk steps (`action_is_pad`) and padded action dimensions contribute nothing.
"""

from __future__ import annotations

import math

import torch


def sample_time(batch_size: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) flow times in [0.001, 1], Beta(1.5, 1) distributed."""
    # Beta(a, 1) is U ** (1 / a): one uniform draw, no rejection sampling, works with a generator.
    u = torch.rand(batch_size, device=device, generator=generator)
    return u ** (1.0 / 1.5) * 0.999 + 0.001


def noisy_actions(actions: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """actions, noise (B, H, A); t (B,) or (B, H) -> x_t and the target velocity u_t, both (B, H, A)."""
    t = t[:, None, None] if t.ndim == 1 else t[..., None]
    return t * noise + (1 - t) * actions, noise - actions


def posemb_sincos(t: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """Sinusoidal embedding of flow times: (...,) -> (..., dim), periods geometric in [min_period, max_period]."""
    if dim % 2:
        raise ValueError(f"embedding dimension {dim} must be even")
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = t[..., None].double() * (2 * math.pi / period)
    return torch.cat([angle.sin(), angle.cos()], dim=-1).float()


def loss_mask(action_is_pad: torch.Tensor, action_dim: int, max_action_dim: int) -> torch.Tensor:
    """(B, H) bool padding flags -> (B, H, max_action_dim) float: 1 on real steps and real dimensions."""
    dims = torch.arange(max_action_dim, device=action_is_pad.device) < action_dim
    return ((~action_is_pad)[..., None] & dims).float()


def masked_mse(v_t: torch.Tensor, u_t: torch.Tensor, mask: torch.Tensor, per_sample: bool = False) -> torch.Tensor:
    """Mean of (v_t - u_t)**2 over the entries where mask is 1: a scalar, or (B,) per sample (0 if none real)."""
    se = (v_t.float() - u_t.float()).square() * mask
    if per_sample:
        return se.sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp(min=1.0)
    return se.sum() / mask.sum().clamp(min=1.0)

"""Real-time chunking (RTC): sample the next chunk so that it continues the actions executing meanwhile.

While chunk k runs, chunk k+1 is computed from a newer observation. By the time it arrives, `delay` = d actions of
chunk k have executed; they occupy the first d steps of chunk k+1's time window and cannot change. Two ways to make
chunk k+1 agree with them (and to move smoothly from the old plan to the new one afterwards):

(a) Inference-time guidance (Black, Galliker, Levine 2025, "Real-time execution of action chunking flow
    policies"): inpaint. At every Euler step the predicted clean chunk a_hat = x_t - t * v(x_t) is pulled towards
    the previous chunk's remaining actions y with weights W (1 on the d frozen steps, decaying exponentially over
    the overlap, 0 beyond), by adding the guidance g = J^T [W * (y - a_hat)] with J = d a_hat / d x_t, a true
    vector-Jacobian product through the action expert (LeRobot 0.4.4 evaluates v before enabling gradients, so its
    J is the identity and the expert's own dependence on x_t is lost). The guidance weight is clipped at `beta`.
    In our convention (t = 1 noise, Euler from 1 to 0; the paper's tau = 1 - t) the guided velocity is
        v_guided = v - min(beta, t / ((1 - t) * r2)) * g,   r2 = t**2 / (t**2 + (1 - t)**2).
(b) Training-time RTC (Black et al. 2025, "training-time action conditioning"): train with a random delay d per
    sample, the first d action tokens given clean (their own flow time 0) and left out of the loss. At deployment
    those tokens are the committed actions: no backward pass, the same cost as plain sampling.

Everything works in the model's space (normalised, padded to max_action_dim).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from vla.model.observation import Observation
    from vla.model.vla import PrefixCache, VLAModel


def prefix_weights(chunk: int, delay: int, overlap: int, device: torch.device | None = None) -> torch.Tensor:
    """(chunk,) guidance weights: 1 for the first `delay` steps, exponentially decaying to 0 at step `overlap`
    (the end of what the previous chunk planned), 0 after. The soft-masking schedule of the RTC paper."""
    if not 0 <= delay <= overlap <= chunk:
        raise ValueError(f"need 0 <= delay ({delay}) <= overlap ({overlap}) <= chunk ({chunk})")
    i = torch.arange(chunk, dtype=torch.float32, device=device)
    c = (overlap - i) / max(overlap - delay + 1, 1)
    soft = c * (torch.exp(c) - 1) / (math.e - 1)
    return torch.where(i < delay, torch.ones_like(i), torch.where(i < overlap, soft, torch.zeros_like(i)))


def guidance_scale(t: float, beta: float) -> float:
    """min(beta, t / ((1 - t) r2)): unbounded near pure noise (t = 1), hence the clip."""
    if t >= 1.0:
        return beta
    r2 = t * t / (t * t + (1 - t) ** 2)
    return min(beta, t / ((1 - t) * r2)) if r2 > 0 else 0.0


def guided_velocity(model: VLAModel, x_t: torch.Tensor, t: torch.Tensor, cache: PrefixCache, target: torch.Tensor,
                    weights: torch.Tensor, beta: float, jacobian: bool = True,
                    t_value: float | None = None) -> torch.Tensor:  # fmt: skip
    """v at x_t (B, H, A) plus the clipped inpainting guidance towards `target` (B, H, A) with `weights` (H,).

    `jacobian=False` reproduces LeRobot 0.4.4 (v computed without gradients, so J = identity) for comparison.
    `t_value`: the flow time as a Python float when the caller has it (saves a device sync per step).
    """
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        if jacobian:
            v = model.denoise_step(x, t, cache)
        else:
            with torch.no_grad():
                v = model.denoise_step(x, t, cache)
        tt = t[:, None, None] if t.ndim == 1 else t[..., None]
        a_hat = x - tt * v
        error = (target - a_hat).detach() * weights[None, :, None]
        (g,) = torch.autograd.grad(a_hat, x, grad_outputs=error)
    scale = guidance_scale(float(t.reshape(-1)[0]) if t_value is None else t_value, beta)
    return v.detach() - scale * g


@torch.no_grad()
def sample_guided(model: VLAModel, obs: Observation, target: torch.Tensor, delay: int, overlap: int,
                  beta: float = 5.0, noise: torch.Tensor | None = None, num_steps: int | None = None,
                  jacobian: bool = True) -> torch.Tensor:  # fmt: skip
    """Inference-time RTC: Euler sampling with guidance towards `target` (B, H, A), the previous chunk's actions
    shifted into this chunk's time window (rows past `overlap` are ignored). -> (B, H, A)."""
    cfg = model.cfg
    steps = num_steps or cfg.num_steps
    b, dev = obs.batch_size, obs.state.device
    x = torch.randn(b, cfg.chunk_size, cfg.max_action_dim, device=dev) if noise is None else noise
    weights = prefix_weights(cfg.chunk_size, delay, overlap, dev)
    cache = model.fill_cache(obs, cfg.chunk_size)
    for i in range(steps):
        t_value = 1.0 - i / steps
        t = torch.full((b,), t_value, device=dev)
        x = x - guided_velocity(model, x, t, cache, target, weights, beta, jacobian, t_value) / steps
    return x


def prefix_times(t: torch.Tensor, delay: torch.Tensor, chunk: int) -> torch.Tensor:
    """Per-token flow time (B, H): 0 (clean) on each sample's first `delay` tokens, t (B,) elsewhere."""
    clean = torch.arange(chunk, device=t.device)[None, :] < delay[:, None]
    return torch.where(clean, torch.zeros((), device=t.device), t[:, None].expand(-1, chunk))


def sample_delays(batch: int, max_delay: int, device: torch.device, generator: torch.Generator | None = None
                  ) -> torch.Tensor:  # fmt: skip
    """(B,) training delays, uniform in {0, ..., max_delay} (0 keeps plain, unconditioned sampling trained)."""
    return torch.randint(0, max_delay + 1, (batch,), device=device, generator=generator)


@torch.no_grad()
def sample_with_prefix(model: VLAModel, obs: Observation, prefix: torch.Tensor, delay: int,
                       noise: torch.Tensor | None = None, num_steps: int | None = None) -> torch.Tensor:  # fmt: skip
    """Training-time RTC at inference: the first `delay` tokens are `prefix[:, :delay]` (B, >=d, A), clean, held
    fixed; the rest is sampled conditioned on them. -> (B, H, A), equal to the prefix on the first d steps."""
    cfg = model.cfg
    steps = num_steps or cfg.num_steps
    b, dev, h = obs.batch_size, obs.state.device, cfg.chunk_size
    if not 0 <= delay <= h or prefix.shape[1] < delay:
        raise ValueError(f"delay {delay} needs 0 <= delay <= chunk {h} and a prefix of at least {delay} steps")
    x = torch.randn(b, h, cfg.max_action_dim, device=dev) if noise is None else noise.clone()
    x[:, :delay] = prefix[:, :delay]
    delays = torch.full((b,), delay, device=dev)
    cache = model.fill_cache(obs, h)
    for i in range(steps):
        t = prefix_times(torch.full((b,), 1.0 - i / steps, device=dev), delays, h)
        x = x - model.denoise_step(x, t, cache) / steps
        x[:, :delay] = prefix[:, :delay]
    return x

"""The exact posterior mean of a mixture of Gaussian fields in their eigenbasis, with its exact gradient.

The oracle's prompt "A or B" is the mixture x₀ ~ ½ N(μ_A 1, Σ) + ½ N(μ_B 1, Σ) (docs/design.md §9). Its posterior
mean is the single field's (Eq. 2–4 of :mod:`~multidiffusion.core.oracle.field`) for the responsibility-weighted
mean, and SyncDiffusion needs its vector-Jacobian product. :class:`PosteriorOperator` holds the per-call constants and
:class:`ExactPosterior` is the autograd function that
:meth:`~multidiffusion.core.oracle.field.GaussianField.predict_mixture` applies; both are plain PyTorch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class PosteriorOperator:
    """The per-call constants of the exact posterior mean in the eigenbasis (``GaussianField.predict_mixture``).

    For one window size and noise levels α, s (one per row, or one for the batch), the output for a mean μ is

        y = β μ + U_h (c ⊙ (U_hᵀ (x_t − α μ) U_w)) U_wᵀ

    with d = α² λ + s² and, per prediction type (:meth:`~multidiffusion.core.oracle.field.GaussianField.predict`),
    sample: c = α λ / d, β = 1; epsilon: c = s / d, β = 0; v_prediction: c = α s (1 − λ) / d, β = −s.
    The linear part A = (U_h ⊗ U_w) diag(c) (U_h ⊗ U_w)ᵀ is symmetric.
    """

    def __init__(
        self,
        basis: tuple[Tensor, Tensor, Tensor],
        alpha: Tensor | float,
        s: Tensor | float,
        prediction_type: str,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        """The constants for one call.

        Args:
            basis: (U_h (h, h), U_w (w, w), λ (h, w)) of the field's covariance, float64 on ``device``
                (:meth:`~multidiffusion.core.oracle.field.GaussianField.eigenbasis`).
            alpha: sqrt(ᾱ_t), a float or (B,).
            s: sqrt(1 − ᾱ_t), likewise.
            prediction_type: ``epsilon``, ``sample`` or ``v_prediction`` (already checked by the caller).
            dtype: The dtype to compute in (float32 or float64).
            device: Where ``x_t`` lives.
        """
        u_h, u_w, lam = (m.to(dtype) for m in basis)
        a = torch.as_tensor(alpha, dtype=dtype, device=device).reshape(-1, 1, 1, 1)
        sd = torch.as_tensor(s, dtype=dtype, device=device).reshape(-1, 1, 1, 1)
        if a.shape[0] > 1 and bool((a == a[:1]).all()) and bool((sd == sd[:1]).all()):
            a, sd = a[:1], sd[:1]  # one noise level for the batch: coefficients of shape (1, 1, h, w)
        if a.shape != sd.shape:
            a, sd = torch.broadcast_tensors(a, sd)
        denom = (a * a * lam + sd * sd).clamp_min(torch.finfo(dtype).tiny)  # eigenvalues of Var(x_t)
        if prediction_type == "sample":
            self.coef, self.beta = a * lam / denom, torch.ones_like(a)  # Eq. 2 in the eigenbasis
        elif prediction_type == "epsilon":
            self.coef, self.beta = sd / denom, torch.zeros_like(a)  # Eq. 3 in the eigenbasis
        else:
            self.coef, self.beta = a * sd * (1 - lam) / denom, -sd  # v = α ε̂ − s x̂₀
        self.u_h, self.u_w, self.a = u_h, u_w, a
        self.ones = u_h.sum(0)[:, None] * u_w.sum(0)[None, :]  # e: eigen-coordinates of a constant 1, (h, w)
        self.ones_over_var = self.ones / denom  # e / d: Var(x_t)⁻¹ 1 in the eigenbasis

    def linear(self, y: Tensor) -> Tensor:
        """A y = U_h (c ⊙ (U_hᵀ y U_w)) U_wᵀ for y (B, C, h, w); out of place."""
        z = torch.matmul(self.u_h.T, y)
        z = torch.matmul(z, self.u_w)
        z.mul_(self.coef)
        return torch.matmul(torch.matmul(self.u_h, z), self.u_w.T)

    def forward(self, x: Tensor, mus: Tensor, scratch: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(y, responsibilities r (B, K) or None when all K means are equal) for x (B, C, h, w), means (B, K, C).

        ``scratch``: a contiguous buffer of ``x``'s shape and dtype for the intermediates (overwritten; None: a new
        one). ``y`` is always a new tensor; every batch-sized intermediate goes through the one buffer.
        """
        a = self.a.reshape(-1, 1)  # (B or 1, 1)
        tmp = torch.empty_like(x, memory_format=torch.contiguous_format) if scratch is None else scratch
        y = torch.empty_like(tmp)
        torch.matmul(self.u_h.T, x, out=tmp)
        z = torch.matmul(tmp, self.u_w, out=y)  # eigen-coordinates of x_t
        if mus.shape[1] > 1 and not bool((mus == mus[:, :1]).all()):
            q = torch.mul(z, self.ones_over_var, out=tmp).sum((-2, -1))  # ⟨z_c, e / d⟩, (B, C)
            energy = (self.ones * self.ones_over_var).sum((-2, -1)).reshape(-1, 1)  # ⟨e, e / d⟩, (B or 1, 1)
            log_r = a * (mus * q[:, None]).sum(-1) - 0.5 * a * a * energy * (mus * mus).sum(-1)  # (B, K)
            r: Tensor | None = torch.softmax(log_r, dim=1)
            mean = (r[:, :, None] * mus).sum(1)  # μ̄ = Σ_k r_k μ_k, (B, C)
        else:
            r, mean = None, mus[:, 0]
        mu = mean[:, :, None, None]
        z.sub_(torch.mul(self.a * mu, self.ones, out=tmp))  # eigen-coordinates of x_t − α μ̄
        z.mul_(self.coef)
        torch.matmul(self.u_h, z, out=tmp)
        torch.matmul(tmp, self.u_w.T, out=y)
        return y.add_(self.beta * mu), r


class ExactPosterior(torch.autograd.Function):
    """y = Σ_k r_k(x) (β μ_k + A (x − α μ_k)) with its exact vector-Jacobian product.

    With g = ∂L/∂y, ∂L/∂x = A g + Σ_k (g · o_k) ∇r_k, and ∇r_k = r_k (∇ℓ_k − Σ_j r_j ∇ℓ_j) with
    ∇ℓ_k = −Var(x_t)⁻¹ (x − α μ_k) (ℓ_k the Gaussian log-likelihood). Σ_k r_k (g · o_k − ḡ) = 0 removes
    the x terms, leaving

        ∂L/∂x = A g + α Var(x_t)⁻¹ Σ_k w_k μ_k,   w_k = r_k (e_k − Σ_j r_j e_j),   e_k = Σ_c μ_kc (β G_c − α S_c)

    with G_c = Σ g_c and S_c = Σ (A g)_c over the pixels (g · o_k up to a term common to all k). Cost: one
    transform into the eigenbasis and one back; the saved state is r (B, K).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, mus: Tensor, operator: PosteriorOperator) -> Tensor:
        y, r = operator.forward(x, mus)
        ctx.operator, ctx.r = operator, r
        ctx.save_for_backward(mus)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        op: PosteriorOperator = ctx.operator
        (mus,) = ctx.saved_tensors
        grad = grad.to(op.coef.dtype)
        out = op.linear(grad)  # A g (A is symmetric)
        if ctx.r is not None:
            r, a = ctx.r, op.a.reshape(-1, 1)
            g_sum, ag_sum = grad.sum((-2, -1)), out.sum((-2, -1))  # G, S: (B, C)
            e = (mus * (op.beta.reshape(-1, 1) * g_sum - a * ag_sum)[:, None]).sum(-1)  # (B, K)
            w = r * (e - (r * e).sum(1, keepdim=True))
            pull = (w[:, :, None] * mus).sum(1)[:, :, None, None]  # Σ_k w_k μ_k, (B, C, 1, 1)
            var_inv_ones = torch.matmul(torch.matmul(op.u_h, op.ones_over_var), op.u_w.T)  # Var(x_t)⁻¹ 1
            out.add_(op.a * pull * var_inv_ones)
        return out, None, None

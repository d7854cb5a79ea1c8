"""The EMA against its definition: closed-form kernel and a naive float64 recurrence."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from mega_tiny import tiny_config

from mega2bart.models.mega.modeling_mega import MegaMultiDimensionDampedEma, _fast_fft_length


def _ema(bidirectional: bool = True, truncation: int | None = None, seed: int = 0, hidden: int = 6, ndim: int = 3):
    config = tiny_config(
        hidden_size=hidden, ema_projection_size=ndim, bidirectional=bidirectional, truncation=truncation
    )
    ema = MegaMultiDimensionDampedEma(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in ema.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
        ema.damping_factor.mul_(2.0)  # spread sigmoid(.) over (0, 1)
    return ema


def _closed_form_kernel(ema: MegaMultiDimensionDampedEma, size: int) -> torch.Tensor:
    p = torch.sigmoid(ema.damping_factor.double()).squeeze(-1)  # (D, N)
    q = 1 - p * torch.sigmoid(ema.decay_factor.double()).squeeze(-1)
    beta = ema.ema_expansion_matrix.double().squeeze(-1)
    eta = ema.kernel_projection_matrix.double()
    lags = torch.arange(size, dtype=torch.float64)
    powers = q[:, :, None] ** lags  # (D, N, K)
    return ((eta * p * beta)[:, :, None] * powers).sum(1) / math.sqrt(ema.ndim)  # (D, K)


def _naive_ema(ema: MegaMultiDimensionDampedEma, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Direct recurrences h_t = p*beta*x_t + q*h_{t-1}, run forwards (and backwards), in float64."""
    x = x.double()
    batch, length, hidden = x.shape
    masked = x * keep[:, :, None].double() if keep is not None else x
    p = torch.sigmoid(ema.damping_factor.double()).squeeze(-1)
    q = 1 - p * torch.sigmoid(ema.decay_factor.double()).squeeze(-1)
    beta = ema.ema_expansion_matrix.double().squeeze(-1)
    eta = ema.kernel_projection_matrix.double() / math.sqrt(ema.ndim)
    taps = length if ema.truncation is None else min(ema.truncation, length)

    def run(rows: slice, sequence: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(batch, length, hidden, dtype=torch.float64)
        for t in range(length):
            # truncated kernel: only the last `taps` inputs contribute
            state = torch.zeros(batch, hidden, ema.ndim, dtype=torch.float64)
            for s in range(max(0, t - taps + 1), t + 1):
                state = p[rows] * beta[rows] * sequence[:, s, :, None] + q[rows] * state
            out[:, t] = (state * eta[rows]).sum(-1)
        return out

    y = run(slice(0, hidden), masked)
    if ema.bidirectional:
        y = y + run(slice(hidden, 2 * hidden), masked.flip(1)).flip(1)
    return F.silu(y + x * ema.residual_weight.double())


@pytest.mark.parametrize("size", [1, 7, 64, 1000])
def test_kernel_matches_closed_form(size: int) -> None:
    ema = _ema()
    kernel = ema.compute_kernel(size)
    assert kernel.dtype == torch.float32 and kernel.shape == (12, size)
    torch.testing.assert_close(kernel.double(), _closed_form_kernel(ema, size), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("truncation", [None, 5])
@pytest.mark.parametrize("masked", [False, True])
def test_ema_matches_naive_recurrence(bidirectional: bool, truncation: int | None, masked: bool) -> None:
    ema = _ema(bidirectional=bidirectional, truncation=truncation)
    x = torch.randn(2, 19, 6, generator=torch.Generator().manual_seed(3))
    keep = None
    if masked:
        keep = torch.ones(2, 19, dtype=torch.bool)
        keep[1, 11:] = False  # right padding
        keep[0, :2] = False  # left padding
    expected = _naive_ema(ema, x, keep)
    torch.testing.assert_close(ema(x, keep).double(), expected, atol=1e-5, rtol=1e-5)


def test_lag_zero_counted_in_both_directions() -> None:
    """A unit impulse at t sees weight K_f[0] + K_b[0] at t (the 4.x behaviour, not fairseq's shift)."""
    ema = _ema()
    with torch.no_grad():
        ema.residual_weight.zero_()
    x = torch.zeros(1, 9, 6)
    x[0, 4] = 1.0
    y = ema(x)
    kernel = ema.compute_kernel(9)
    centre = kernel[:6, 0] + kernel[6:, 0]
    torch.testing.assert_close(y[0, 4], F.silu(centre))
    torch.testing.assert_close(y[0, 6], F.silu(kernel[:6, 2]))  # two steps after: forward kernel only
    torch.testing.assert_close(y[0, 1], F.silu(kernel[6:, 3]))  # three steps before: backward kernel only


def test_kernel_built_in_float32_under_bfloat16_weights() -> None:
    """4.x cast arange(L) to the parameter dtype (only 513 distinct bf16 lags at L=1024); here lags stay exact."""
    ema = _ema().to(torch.bfloat16)
    kernel = ema.compute_kernel(1024)
    assert kernel.dtype == torch.float32
    torch.testing.assert_close(kernel.double(), _closed_form_kernel(ema, 1024), atol=2e-6, rtol=1e-5)
    x = torch.randn(1, 1024, 6).to(torch.bfloat16)
    y = ema(x)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()


def test_fast_fft_length() -> None:
    for minimum in [1, 2, 7, 47, 2047, 4095, 6143, 32767]:
        n = _fast_fft_length(minimum)
        assert n >= minimum
        rest = n
        for factor in (2, 3, 5):
            while rest % factor == 0:
                rest //= factor
        assert rest == 1
        assert all(_fast_fft_length(m) <= n for m in range(1, minimum + 1)) if minimum < 100 else True
    assert _fast_fft_length(2 * 16384 - 1) == 32768

"""MEGA (Moving Average Equipped Gated Attention) for transformers 5.

A from-scratch re-implementation of the transformers 4.x MEGA port (removed in transformers 5):
same attribute names (so 4.x checkpoints load unchanged), same numbers (parity tests against
fixtures made by transformers 4.57.1), and faster:

- the EMA kernel sum_n c[d,n] q[d,n]^l is built as a batched matmul of two small exponential
  tables (no (2H, N, L) intermediate is kept for backward);
- the bidirectional EMA convolution uses one circular FFT of length >= L + K - 1 (2L, not 4L - 2);
- softmax attention goes through `scaled_dot_product_attention` with an additive bias;
- any sequence length works (padded to a multiple of `chunk_size` inside, sliced back);
- gradient checkpointing per block; no eval-mode kernel cache that could go stale.

This folder imports only torch, transformers and its sibling config, so it can be shipped as
`trust_remote_code` code next to a checkpoint.

Notation in shape comments: B batch, L length, H hidden_size, Z shared_representation_size,
E intermediate_size, F nffn_hidden_size, N ema_projection_size, D EMA kernel rows (2H if
bidirectional else H), C chunk length, n_chunks = L / C.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from torch.utils.checkpoint import checkpoint
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.generation import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPoolingAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import logging
from transformers.utils.generic import can_return_tuple

from .configuration_mega import MegaConfig

logger = logging.get_logger(__name__)


# ----------------------------------------------------------------------------------------------
# small building blocks
# ----------------------------------------------------------------------------------------------


def _fast_fft_length(minimum: int) -> int:
    """Smallest 2^a * 3^b * 5^c >= minimum (FFT sizes with small prime factors are fast)."""
    best = 1 << max(0, (minimum - 1).bit_length())
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            candidate = power35
            while candidate < minimum:
                candidate *= 2
            best = min(best, candidate)
            power35 *= 3
        power5 *= 5
    return best


# Under attn_implementation="sdpa" (the default, as for every transformers model that supports it) the chunked
# self-attention still uses explicit matmuls on the CPU, where they are faster than SDPA's math fallback
# (benchmarks/README.md); both give the same numbers (tests set this False to run SDPA on the CPU).
EXPLICIT_ON_CPU = True


class MegaDropout(nn.Module):
    """Element-wise dropout, or channel-wise ("feature") dropout with one mask per (batch, channel).

    Inputs are batch-first (B, ..., channels). Unlike the 4.x port, feature dropout on chunked
    values drops channels, not whole chunks (the port's quirk, docs/mega.md#dropout).
    """

    def __init__(self, p: float, is_featurewise: bool = False):
        super().__init__()
        self.p = p
        self.is_featurewise = is_featurewise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if not self.is_featurewise:
            return F.dropout(x, p=self.p, training=True)
        # one keep/drop decision per (batch, channel), shared by every position
        mask_shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        keep = torch.empty(mask_shape, device=x.device, dtype=x.dtype).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, is_featurewise={self.is_featurewise}"


class MegaScaleNorm(nn.Module):
    """y = s * x / sqrt(mean(x^2) + eps), one learnable scalar s (`scalar`)."""

    def __init__(self, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.scalar = nn.Parameter(torch.ones(1)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inverse_rms = torch.rsqrt(x.float().pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., 1)
        if self.scalar is not None:
            inverse_rms = inverse_rms * self.scalar  # fold the scale into the (..., 1) factor: one pass fewer
        return x * inverse_rms.to(x.dtype)


class MegaRMSNorm(nn.Module):
    """RMSNorm with a per-channel `weight`.

    The 4.x port computes the normalisation and discards it, returning `x * weight` (docs/mega.md#normalisation).
    `legacy=True` keeps that behaviour, so checkpoints trained with it give the same numbers;
    `legacy=False` normalises: y = x * weight / sqrt(mean(x^2) + eps).
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5, affine: bool = True, legacy: bool = True):
        super().__init__()
        self.eps = eps
        self.legacy = legacy
        self.weight = nn.Parameter(torch.ones(hidden_size)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.legacy:
            x = (x.float() * torch.rsqrt(x.float().pow(2).mean(dim=-1, keepdim=True) + self.eps)).to(x.dtype)
        if self.weight is not None:
            x = x * self.weight
        return x

    def extra_repr(self) -> str:
        return f"eps={self.eps}, legacy={self.legacy}"


class MegaSequenceNorm(nn.Module):
    """Picks the norm named by `config.normalization_type`; the inner module is `.norm` (state-dict keys)."""

    def __init__(self, config: MegaConfig):
        super().__init__()
        kind, hidden, eps, affine = config.normalization_type, config.hidden_size, 1e-5, config.norm_affine
        if kind == "scalenorm":
            self.norm = MegaScaleNorm(eps=eps, affine=affine)
        elif kind == "layernorm":
            self.norm = nn.LayerNorm(hidden, eps=eps, elementwise_affine=affine)
        elif kind == "rmsnorm":
            self.norm = MegaRMSNorm(hidden, eps=eps, affine=affine, legacy=config.legacy_rmsnorm)
        elif kind == "batchnorm":
            self.norm = nn.BatchNorm1d(hidden, eps=eps, affine=affine)
        elif kind == "syncbatchnorm":
            self.norm = nn.SyncBatchNorm(hidden, eps=eps, affine=affine)
        else:  # guarded by MegaConfig validation
            raise ValueError(f"unknown normalization_type {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.norm, nn.modules.batchnorm._BatchNorm):
            # (B, L, H) -> (B, H, L) -> BatchNorm over channels H -> (B, L, H)
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(x)


class MegaEmbeddings(nn.Module):
    """Word embeddings plus optional token-type embeddings; no positions, norm or dropout (as 4.x)."""

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.use_token_types = config.add_token_type_embeddings
        if self.use_token_types:
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (B, L, H)
        if not self.use_token_types:
            return inputs_embeds
        if token_type_ids is None:
            # 4.x adds token type 0 everywhere; no length cap here (the port's buffer capped L at max_positions)
            return inputs_embeds + self.token_type_embeddings.weight[0]
        return inputs_embeds + self.token_type_embeddings(token_type_ids)


class MegaSimpleRelativePositionalBias(nn.Module):
    """B[i, j] = w[base - 1 + (j - i)] with base = chunk_size if chunk_size >= 0 else max_positions."""

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.max_positions = config.chunk_size if config.chunk_size >= 0 else config.max_positions
        self.rel_pos_bias = nn.Parameter(torch.zeros(2 * config.max_positions - 1))

    def forward(self, seq_len: int) -> torch.Tensor:
        if seq_len > self.max_positions:
            raise ValueError(
                f"attention block length {seq_len} exceeds the simple relative bias range {self.max_positions}: "
                "enable use_chunking (with chunk_size <= that range) or shorten the input"
            )
        window = self.rel_pos_bias[self.max_positions - seq_len : self.max_positions + seq_len - 1]  # (2L-1,)
        # windows[s, t] = window[s + t]; B[i, j] = window[L-1 - i + j] = windows[L-1 - i, j]
        return window.unfold(0, seq_len, 1).flip(0)  # (L, L)

    def rectangle(self, start: int, rows: int, cols: int) -> torch.Tensor:
        """Cross-attention bias B[i, j] = w[base - 1 + j - i], target rows i = start..start+rows-1, sources j < cols.

        The 4.x port slices these rows out of the square bias of max(targets, sources), so both the
        target positions and the source length must fit in the bias range.
        """
        if max(start + rows, cols) > self.max_positions:
            raise ValueError(
                f"cross-attention over {cols} source and {start + rows} target positions exceeds the simple relative "
                f"bias range {self.max_positions} (chunk_size, or max_positions when chunk_size < 0): use a decoder "
                "config with relative_positional_bias='rotary' or a larger range, or shorten the inputs"
            )
        device = self.rel_pos_bias.device
        i = torch.arange(start, start + rows, device=device)  # (rows,)
        j = torch.arange(cols, device=device)  # (cols,)
        return self.rel_pos_bias[self.max_positions - 1 + j[None, :] - i[:, None]]  # (rows, cols)


class MegaRotaryRelativePositionalBias(nn.Module):
    """B = rot(alpha) rot(beta)^T with sinusoidal rotation by position (base 10000, Z/2 frequencies)."""

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.embed_dim = config.shared_representation_size
        self.alpha = nn.Parameter(torch.zeros(1, self.embed_dim))
        self.b_param = nn.Parameter(torch.zeros(1, self.embed_dim))  # beta in the paper
        self.register_buffer("_float_tensor", torch.zeros(1))  # persistent in 4.x checkpoints

    def _rotate(self, x: torch.Tensor, seq_len: int, start: int = 0) -> torch.Tensor:
        """x (1, Z) rotated to positions start..start+seq_len-1: (L, Z)."""
        half = self.embed_dim // 2
        inv_freq = torch.exp(
            torch.arange(half, dtype=torch.float32, device=x.device) * -(math.log(10000) / half)
        )  # (Z/2,)
        positions = torch.arange(start, start + seq_len, dtype=torch.float32, device=x.device)  # (L,)
        angles = positions[:, None] * inv_freq[None, :]  # (L, Z/2)
        sin, cos = angles.sin().to(x.dtype), angles.cos().to(x.dtype)
        first, second = x.expand(seq_len, self.embed_dim).chunk(2, dim=-1)  # 2 x (L, Z/2)
        return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)  # (L, Z)

    def forward(self, seq_len: int) -> torch.Tensor:
        return self._rotate(self.alpha, seq_len) @ self._rotate(self.b_param, seq_len).T  # (L, L)

    def rectangle(self, start: int, rows: int, cols: int) -> torch.Tensor:
        """Cross-attention bias: rows of target positions start..start+rows-1, columns of sources 0..cols-1.

        Each entry depends only on its two positions, so this equals the port's slice of the square
        bias of max(targets, sources) without building the square.
        """
        return self._rotate(self.alpha, rows, start) @ self._rotate(self.b_param, cols).T  # (rows, cols)


# ----------------------------------------------------------------------------------------------
# the multi-dimensional damped EMA
# ----------------------------------------------------------------------------------------------


class MegaMultiDimensionDampedEma(nn.Module):
    """Bidirectional (or causal) multi-dimensional damped EMA, applied as a long convolution.

    Per kernel row d (channel d, or channel d - H for the backward direction) and component n:
        p = sigmoid(damping_factor)            # alpha in the paper: input weight
        q = 1 - p * sigmoid(decay_factor)      # previous-step weight (delta is sigmoid(decay_factor))
        K[d, l] = N^-1/2 * sum_n eta[d,n] * p[d,n] * beta[d,n] * q[d,n]^l,   l = 0..K-1
    and y[t] = sum_j K_f[j] x[t-j] + sum_i K_b[i] x[t+i] (lag 0 counted in both sums, as 4.x),
    output SiLU(y + omega * x) with the masked x in y and the unmasked x in the omega term.
    """

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.ndim = config.ema_projection_size
        self.bidirectional = config.bidirectional
        self.truncation = config.truncation
        # the lag block of the compiled kernel (compute_kernel): a divisor of the chunk size divides every length a
        # chunked model pads to, so no length leaves a remainder block that dynamic shapes would specialise on
        self.compiled_block = math.gcd(32, config.chunk_size) if config.use_chunking else 32
        self.scale = math.sqrt(1.0 / self.ndim)
        rows = 2 * config.hidden_size if self.bidirectional else config.hidden_size
        self.damping_factor = nn.Parameter(torch.zeros(rows, self.ndim, 1))  # alpha (paper), via sigmoid
        self.decay_factor = nn.Parameter(torch.zeros(rows, self.ndim, 1))  # delta (paper), via sigmoid
        self.ema_expansion_matrix = nn.Parameter(torch.zeros(rows, self.ndim, 1))  # beta (paper)
        self.kernel_projection_matrix = nn.Parameter(torch.zeros(rows, self.ndim))  # eta (paper)
        self.residual_weight = nn.Parameter(torch.zeros(config.hidden_size))  # omega (paper)

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Float32 (p*beta, q, eta*N^-1/2), each (D, N)."""
        p = torch.sigmoid(self.damping_factor.float())  # (D, N, 1)
        q = 1.0 - p * torch.sigmoid(self.decay_factor.float())  # (D, N, 1)
        p_beta = (p * self.ema_expansion_matrix.float()).squeeze(-1)  # (D, N)
        eta = self.kernel_projection_matrix.float() * self.scale  # (D, N)
        return p_beta, q.squeeze(-1), eta

    def kernel_size(self, length: int) -> int:
        return length if self.truncation is None else min(self.truncation, length)

    def compute_kernel(self, length: int) -> torch.Tensor:
        """The EMA kernel K (D, kernel_size(length)) in float32.

        q^l is factored as q^(block*b) * q^j, so the sum over n becomes a batched matmul of
        (D, blocks, N) by (D, N, b) tables: O(D*N*(blocks + b)) exponentials instead of O(D*N*L),
        and autograd keeps only those two small tables.
        """
        size = self.kernel_size(length)
        p_beta, q, eta = self.coefficients()
        log_q = torch.log(q)  # (D, N)
        if torch.compiler.is_compiling():
            # compiled: a fixed block of lags (32, or a divisor of the chunk size), so the shape arithmetic is a
            # floor division that dynamic shapes handle (the sqrt/ceil below of a symbolic length would pin them to
            # ranges of lengths). The plain sum over n of c q^l, (D, N, K) exponentials, cost 6.4e9 of them per 16k
            # forward of the seed encoder and made the compiled model slower than eager from 4,096 tokens on
            # (benchmarks/README.md, run 5).
            block = self.compiled_block
        else:
            block = 1 << max(0, math.ceil(math.log2(math.sqrt(size))))
        n_blocks = -(-size // block)
        lags = torch.arange(block, dtype=torch.float32, device=q.device)  # (b,)
        starts = torch.arange(n_blocks, dtype=torch.float32, device=q.device) * block  # (blocks,)
        inner = torch.exp(log_q[:, :, None] * lags)  # (D, N, b): q^j
        outer = (p_beta * eta)[:, None, :] * torch.exp(starts[None, :, None] * log_q[:, None, :])  # (D, blocks, N)
        kernel = torch.bmm(outer, inner)  # (D, blocks, b)
        return kernel.reshape(kernel.shape[0], n_blocks * block)[:, :size]  # (D, K)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, H); keep (B, L) bool or None. Returns SiLU(EMA(x) + omega * x), (B, L, H)."""
        signal = x.float()
        if keep is not None:
            signal = signal * keep[:, :, None]
        if torch.is_grad_enabled() and signal.requires_grad:
            # recompute the kernel and the FFTs in backward instead of keeping their ~45 MB per layer
            # per 1,024 tokens (exponential tables, padded signal, spectra): a few % of the step's time
            y = checkpoint(self._convolve, signal, use_reentrant=False)
        else:
            y = self._convolve(signal)
        y = y.to(x.dtype)  # (B, L, H), a fresh tensor
        y = y.addcmul_(x, self.residual_weight)  # + omega * x (unmasked x); in place: y is not saved for backward
        return F.silu(y, inplace=not torch.is_grad_enabled())

    def _convolve(self, signal: torch.Tensor) -> torch.Tensor:
        """The EMA convolution y of a masked float32 signal (B, L, H) -> (B, L, H) float32."""
        batch, length, hidden = signal.shape
        kernel = self.compute_kernel(length)  # (D, K) float32
        size = kernel.shape[-1]
        # >= L + K - 1; the smooth-size search is plain Python over ints, so compiled code takes 2L (K <= L)
        n_fft = 2 * length if torch.compiler.is_compiling() else _fast_fft_length(length + size - 1)
        if self.bidirectional:
            forward_k, backward_k = kernel.split(hidden, dim=0)  # 2 x (H, K)
            # circular layout: index m < K holds K_f[m] (+ K_b[0] at m = 0), index n_fft - i holds K_b[i]
            pieces = [forward_k[:, :1] + backward_k[:, :1], forward_k[:, 1:]]
            pieces.append(kernel.new_zeros(hidden, n_fft - 2 * size + 1))
            pieces.append(backward_k[:, 1:].flip(-1))
            circular = torch.cat(pieces, dim=-1)  # (H, n_fft)
        else:
            circular = F.pad(kernel, (0, n_fft - size))  # (H, n_fft)
        signal = signal.transpose(1, 2)  # (B, H, L)
        spectrum = torch.fft.rfft(signal, n=n_fft) * torch.fft.rfft(circular, n=n_fft)  # (B, H, n_fft/2+1)
        y = torch.fft.irfft(spectrum, n=n_fft)[..., :length]  # (B, H, L)
        return y.transpose(1, 2).contiguous()  # (B, L, H): contiguous, so the projections after it are plain GEMMs

    def forward_with_state(
        self, x: torch.Tensor, keep: torch.Tensor | None, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal EMA that continues from `state` (incremental decoding).

        The state s (B, H, N) is the recurrence h_t = p*beta*x_t + q*h_{t-1} after the last seen
        token (None = no history); the output is N^-1/2 sum_n eta*h_t. One token is one recurrence
        step; L > 1 tokens use the convolution plus the decayed history, sum_n eta q^(t+1) s.
        Returns (SiLU(y + omega * x) (B, L, H), new state (B, H, N) float32). Exact only without
        `truncation` (the uncached path truncates the kernel, the recurrence does not).
        """
        if self.bidirectional:
            raise ValueError(
                "incremental decoding (use_cache=True) needs a causal EMA, but config.bidirectional=True: "
                "use a MegaConfig with bidirectional=False, or call the model with use_cache=False"
            )
        batch, length, hidden = x.shape
        p_beta, q, eta = self.coefficients()  # 3 x (H, N)
        signal = x.float()
        if keep is not None:
            signal = signal * keep[:, :, None]
        if length == 1:
            new_state = p_beta * signal[:, 0, :, None]  # (B, H, N)
            if state is not None:
                new_state = new_state + q * state
            y = (new_state * eta).sum(-1)[:, None, :]  # (B, 1, H)
        else:
            y = self._convolve(signal)  # (B, L, H)
            powers = torch.exp(torch.log(q)[:, :, None] * torch.arange(length + 1, device=q.device))  # (H, N, L+1)
            # h_L = sum_j p*beta*q^(L-1-j) x_j (+ q^L s)
            new_state = p_beta * torch.einsum("blh,hnl->bhn", signal, powers[:, :, :length].flip(-1))  # (B, H, N)
            if state is not None:
                y = y + torch.einsum("bhn,hnl->blh", state * eta, powers[:, :, 1:])  # (B, L, H): eta q^(t+1) s
                new_state = new_state + powers[:, :, length] * state
        return F.silu(y.to(x.dtype) + x * self.residual_weight), new_state


# ----------------------------------------------------------------------------------------------
# incremental decoding state
# ----------------------------------------------------------------------------------------------


class MegaCache(Cache):
    """Decoding state of a causal MEGA, one entry per layer (the 4.x port used a legacy tuple).

    Per layer: the EMA state (B, H, N) float32, and the keys (B, r, Z) / values (B, r, E) of the
    attention block being filled (r = seen % chunk_size with chunking, all seen tokens without;
    with chunking they are dropped when a block fills, as the port does). `key_keep` (B, r) is the
    padding of those cached keys (None = all real), shared by the layers. With cross-attention, also
    the projected encoder keys (B, S, Z) / values (B, S, H) per layer, made on the first cached call,
    and their padding `cross_keep` (B, S) (None = all real). It subclasses `Cache` so that
    `generate()` accepts it; it keeps no transformers cache layers (`layers` is empty).
    """

    is_compileable = False

    def __init__(self, num_layers: int):
        super().__init__(layers=[])
        self.num_layers = num_layers
        self.ema_states: list[torch.Tensor | None] = [None] * num_layers
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.key_keep: torch.Tensor | None = None
        self.cross_keys: list[torch.Tensor | None] = [None] * num_layers
        self.cross_values: list[torch.Tensor | None] = [None] * num_layers
        self.cross_keep: torch.Tensor | None = None
        self.seen_tokens = 0

    def __len__(self) -> int:
        return self.num_layers

    def __repr__(self) -> str:
        return f"MegaCache(num_layers={self.num_layers}, seen_tokens={self.seen_tokens})"

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    def reset(self) -> None:
        self.__init__(self.num_layers)

    def _map(self, fn) -> None:
        for store in (self.ema_states, self.keys, self.values, self.cross_keys, self.cross_values):
            for i, tensor in enumerate(store):
                if tensor is not None:
                    store[i] = fn(tensor)
        if self.key_keep is not None:
            self.key_keep = fn(self.key_keep)
        if self.cross_keep is not None:
            self.cross_keep = fn(self.cross_keep)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map(lambda t: t[indices])

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("MegaCache cannot be cropped: the EMA state cannot be rewound")


# ----------------------------------------------------------------------------------------------
# gated attention, NFFN, block
# ----------------------------------------------------------------------------------------------


def _laplace(x: torch.Tensor, mu: float = 0.707107, sigma: float = 0.282095) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf((x - mu) / (sigma * math.sqrt(2.0))))


class MegaMovingAverageGatedAttention(nn.Module):
    """The MEGA sublayer: EMA -> gates -> single-head (chunked) attention -> gated residual."""

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.config = config
        hidden, z_dim, e_dim = config.hidden_size, config.shared_representation_size, config.intermediate_size
        self.activation = ACT2FN[config.activation]
        self.scaling = z_dim**-0.5 if config.attention_activation == "softmax" else None
        self.dropout = MegaDropout(config.dropout_prob, config.use_feature_dropout)
        self.hidden_dropout = MegaDropout(config.hidden_dropout_prob, config.use_feature_dropout)
        self.attention_dropout = config.attention_probs_dropout_prob  # plain dropout on probabilities
        self.norm = MegaSequenceNorm(config)
        self.ema_gate = MegaMultiDimensionDampedEma(config)
        self.v_proj = nn.Linear(hidden, e_dim)
        # rows: [u (H, phi in the paper) | z (Z) | r (E, gamma in the paper) | hx (H)]
        self.mx_proj = nn.Linear(hidden, 2 * hidden + z_dim + e_dim)
        self.h_proj = nn.Linear(e_dim, hidden)
        self.qk_weight = nn.Parameter(torch.zeros(2, z_dim))  # kappa in the paper
        self.qk_bias = nn.Parameter(torch.zeros(2, z_dim))  # mu in the paper
        if config.relative_positional_bias == "simple":
            self.rel_pos_bias = MegaSimpleRelativePositionalBias(config)
        else:
            self.rel_pos_bias = MegaRotaryRelativePositionalBias(config)

    def forward(
        self,
        x: torch.Tensor,
        keep: torch.Tensor | None = None,
        causal: bool = False,
        output_attentions: bool = False,
        cache: MegaCache | None = None,
        layer_idx: int = 0,
        attn_implementation: str = "eager",
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, L, H) residual stream; keep (B, L) bool. Returns (out (B, L, H), attention or None).

        With `cache` (causal decoding), the EMA continues from the cached state and the attention
        sees the cached keys/values of the current block; both are updated in place.
        `attn_implementation` ("eager" or "sdpa", the model's `config._attn_implementation`) picks
        how softmax attention is computed; both give the same numbers.
        """
        config = self.config
        # without autograd (inference) activations and gates are applied in place: at 16k tokens each
        # (L, E) temporary is 150 MB, and fresh allocations cost page faults on the CPU
        inplace = not torch.is_grad_enabled()
        residual = x
        if config.normalize_before_mega:
            x = self.norm(x)
        value = self._activate(self.v_proj(x), inplace)  # (B, L, E)
        if cache is None:
            ema_out = self.ema_gate(x, keep)  # (B, L, H)
        else:
            ema_out, cache.ema_states[layer_idx] = self.ema_gate.forward_with_state(
                x, keep, cache.ema_states[layer_idx]
            )
        ema_out = self.dropout(ema_out)
        base = self.mx_proj(ema_out)  # (B, L, 2H + Z + E)
        u, zr, hx = base.split(
            [config.hidden_size, config.shared_representation_size + config.intermediate_size, config.hidden_size],
            dim=-1,
        )
        u = u.sigmoid_() if inplace else torch.sigmoid(u)  # (B, L, H) update gate
        z, r = F.silu(zr, inplace=inplace).split([config.shared_representation_size, config.intermediate_size], dim=-1)
        qk = z.unsqueeze(2) * self.qk_weight + self.qk_bias  # (B, L, 2, Z)
        query, key = qk.unbind(dim=2)  # 2 x (B, L, Z)
        value = self.hidden_dropout(value)

        if cache is not None and cache.keys[layer_idx] is not None:
            attended, weights = self._attend_cached(query, key, value, keep, cache, layer_idx, output_attentions)
        else:
            attended, weights = self._attend(
                query, key, value, keep, causal, output_attentions, attn_implementation
            )  # (B, L, E)
            if cache is not None:
                self._store_block_tail(key, value, cache, layer_idx)

        gated = attended.mul_(r) if inplace else attended * r  # (B, L, E)
        h = self.h_proj(gated).add_(hx)  # (B, L, H); the GEMM output is not needed by its backward
        h = self.dropout(self._activate(h, inplace))
        if inplace:
            out = h.sub_(residual).mul_(u).add_(residual)  # (1 - u) * residual + u * h
        else:
            out = torch.addcmul(residual, u, h - residual)
        if not config.normalize_before_mega:
            out = self.norm(out)
        return out, weights

    def _activate(self, x: torch.Tensor, inplace: bool) -> torch.Tensor:
        if inplace and self.config.activation == "silu":
            return F.silu(x, inplace=True)
        return self.activation(x)

    def _drop_attention(self, weights: torch.Tensor) -> torch.Tensor:
        if not self.training or self.attention_dropout == 0.0:
            return weights
        return F.dropout(weights, p=self.attention_dropout, training=True)

    # -- attention ------------------------------------------------------------------------------

    def _block_length(self, length: int) -> int:
        """Attention block length for a sequence of `length` tokens."""
        chunk = self.config.chunk_size
        if self.config.use_chunking and length > chunk:
            if length % chunk:
                raise ValueError(
                    f"sequence length {length} is not a multiple of chunk_size {chunk}; MegaModel pads inputs itself, "
                    "so call the model rather than its layers, or pad to a multiple of chunk_size"
                )
            return chunk
        return length

    def _store_block_tail(self, key: torch.Tensor, value: torch.Tensor, cache: MegaCache, layer_idx: int) -> None:
        """Cache the keys/values of the last, unfinished attention block (starting at a block boundary)."""
        length = key.shape[1]
        tail = length % self.config.chunk_size if self.config.use_chunking else length
        cache.keys[layer_idx] = key[:, length - tail :] if tail else None  # (B, r, Z)
        cache.values[layer_idx] = value[:, length - tail :] if tail else None  # (B, r, E)

    def _attend_cached(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        keep: torch.Tensor | None,
        cache: MegaCache,
        layer_idx: int,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Causal attention of L new queries over the r cached keys of their block plus the L new keys.

        MegaModel guarantees the new tokens do not cross a block boundary. Returns (B, L, E) and
        attention weights (B, 1, L, r + L) when asked. Always explicit matmuls, whatever the
        attn_implementation: the score matrix of a decoding step is at most (L, chunk_size).
        """
        batch, length, _ = query.shape
        cached = cache.keys[layer_idx].shape[1]
        k = torch.cat([cache.keys[layer_idx], key], dim=1)  # (B, r+L, Z)
        v = torch.cat([cache.values[layer_idx], value], dim=1)  # (B, r+L, E)
        if self.config.use_chunking and cached + length == self.config.chunk_size:
            cache.keys[layer_idx] = cache.values[layer_idx] = None  # block full: start a new one
        else:
            cache.keys[layer_idx], cache.values[layer_idx] = k, v
        total = cached + length
        bias = self.rel_pos_bias(total)[cached:].to(query.dtype)  # (L, r+L): rows of the new queries
        positions = torch.arange(total, device=query.device)
        causal_keep = positions[None, :] <= positions[cached:, None]  # (L, r+L)
        key_keep = None
        if keep is not None or cache.key_keep is not None:
            old = cache.key_keep if cache.key_keep is not None else query.new_ones(batch, cached, dtype=torch.bool)
            new = keep if keep is not None else query.new_ones(batch, length, dtype=torch.bool)
            key_keep = torch.cat([old, new], dim=1)  # (B, r+L)
        q, k, v = query[:, None], k[:, None], v[:, None]  # (B, 1, L, Z), (B, 1, r+L, Z), (B, 1, r+L, E)
        if self.config.attention_activation == "softmax":
            mask = bias.masked_fill(~causal_keep, float("-inf"))  # (L, r+L)
            if key_keep is not None:
                masked_keys = ~key_keep & key_keep.any(dim=-1, keepdim=True)  # (B, r+L); all-pad block unmasked
                mask = (
                    mask
                    + torch.zeros(masked_keys.shape, dtype=q.dtype, device=q.device).masked_fill(
                        masked_keys, float("-inf")
                    )[:, None, None, :]
                )  # (B, 1, L, r+L)
            scores = (q * self.scaling) @ k.transpose(-1, -2) + mask  # (B, 1, L, r+L)
            weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        else:
            lengths = causal_keep.sum(-1, keepdim=True).to(q.dtype)  # (L, 1): r + i + 1 for row i
            scores = (q @ k.transpose(-1, -2)) / lengths + bias  # (B, 1, L, r+L)
            weights = _laplace(scores) if self.config.attention_activation == "laplace" else F.relu(scores).square()
            if key_keep is not None:
                weights = weights * key_keep[:, None, None, :].to(weights.dtype)
            weights = weights * causal_keep.to(weights.dtype)
        out = self._drop_attention(weights) @ v  # (B, 1, L, E)
        return out.reshape(batch, length, -1), (weights if output_attentions else None)

    def _attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        keep: torch.Tensor | None,
        causal: bool,
        output_attentions: bool,
        attn_implementation: str = "eager",
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, _ = query.shape
        block = self._block_length(length)
        n_chunks = length // block
        q = query.reshape(batch, n_chunks, block, -1)  # (B, n_chunks, C, Z)
        k = key.reshape(batch, n_chunks, block, -1)  # (B, n_chunks, C, Z)
        v = value.reshape(batch, n_chunks, block, -1)  # (B, n_chunks, C, E)
        keep_chunks = keep.reshape(batch, n_chunks, block) if keep is not None else None  # (B, n_chunks, C)
        bias = self.rel_pos_bias(block).to(q.dtype)  # (C, C)
        causal_keep = torch.ones(block, block, dtype=torch.bool, device=q.device).tril() if causal else None  # (C, C)

        if self.config.attention_activation == "softmax":
            mask = bias
            if causal_keep is not None:
                mask = mask.masked_fill(~causal_keep, float("-inf"))
            masked_keys = None
            if keep_chunks is not None:
                # pad keys -> -inf, except in chunks whose keys are all padding (left unmasked: no NaN, as 4.x)
                masked_keys = ~keep_chunks & keep_chunks.any(dim=-1, keepdim=True)  # (B, n_chunks, C)
            if output_attentions or attn_implementation != "sdpa" or (q.device.type == "cpu" and EXPLICIT_ON_CPU):
                # explicit matmuls ("eager"; SDPA returns no weights): on CPU ~1.7x (fp32) to ~6x (bf16) faster
                # than SDPA's math fallback, which is all CPU SDPA offers when the value width E differs from Z,
                # so "sdpa" (transformers' default) takes them on the CPU too (EXPLICIT_ON_CPU)
                scores = torch.matmul(q * self.scaling, k.transpose(-1, -2))  # (B, n_chunks, C, C)
                scores.add_(mask)  # in place: matmul's backward does not need its output
                if masked_keys is not None:
                    scores.masked_fill_(masked_keys[:, :, None, :], float("-inf"))
                weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
                out = torch.matmul(self._drop_attention(weights), v)
                weights = weights if output_attentions else None
            else:
                if masked_keys is not None:
                    key_bias = torch.zeros(masked_keys.shape, dtype=q.dtype, device=q.device)
                    key_bias = key_bias.masked_fill(masked_keys, float("-inf"))
                    mask = mask + key_bias[:, :, None, :]  # (B, n_chunks, C, C)
                weights = None
                out = F.scaled_dot_product_attention(
                    q,
                    k,
                    v,
                    attn_mask=mask,
                    dropout_p=self.attention_dropout if self.training else 0.0,
                    scale=self.scaling,
                )  # (B, n_chunks, C, E)
        else:
            # element attention: act(q k^T / n + bias) * key mask (* causal), n = real keys per chunk
            if causal_keep is not None:
                lengths = causal_keep.sum(-1, keepdim=True).to(q.dtype)  # (C, 1): i + 1 for row i
            elif keep_chunks is not None:
                lengths = keep_chunks.sum(-1, keepdim=True).clamp(min=1).to(q.dtype)[..., None]  # (B, n_chunks, 1, 1)
            else:
                lengths = float(block)
            scores = (q @ k.transpose(-1, -2)) / lengths + bias  # (B, n_chunks, C, C)
            if self.config.attention_activation == "laplace":
                weights = _laplace(scores)
            else:
                weights = F.relu(scores).square()
            if keep_chunks is not None:
                weights = weights * keep_chunks[:, :, None, :].to(weights.dtype)
            if causal_keep is not None:
                weights = weights * causal_keep.to(weights.dtype)
            out = self._drop_attention(weights) @ v
            weights = weights if output_attentions else None
        return out.reshape(batch, length, -1), weights  # (B, L, E)


class MegaGatedCrossAttention(nn.Module):
    """MEGA's gated cross-attention (the 4.x port's decoder sublayer, after the self-attention).

    With x the decoder stream (B, T, H) and e the encoder states (B, S, H):
        [u | r | q] = q_proj(norm?(x))           # update gate sigmoid (H), target gate SiLU (H), query (Z)
        k = k_proj(e), v = act(v_proj(e))         # (B, S, Z), (B, S, H)
        a = attention(q, k) v                      # one full (unchunked) block: T x S scores, no causality
        out = x + u * (act(h_proj(r * a)) - x)     # then the norm if post-norm
    The bias rows are the absolute target positions, so a cached step reads the row of its position.
    """

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.config = config
        hidden, z_dim = config.hidden_size, config.shared_representation_size
        self.activation = ACT2FN[config.activation]
        self.scaling = z_dim**-0.5 if config.attention_activation == "softmax" else None
        self.dropout = MegaDropout(config.dropout_prob, config.use_feature_dropout)
        self.hidden_dropout = MegaDropout(config.hidden_dropout_prob, config.use_feature_dropout)
        self.attention_dropout = config.attention_probs_dropout_prob  # plain dropout on probabilities
        self.norm = MegaSequenceNorm(config)
        self.k_proj = nn.Linear(hidden, z_dim)
        self.v_proj = nn.Linear(hidden, hidden)
        # rows: [u (H) | r (H) | query (Z)]
        self.q_proj = nn.Linear(hidden, 2 * hidden + z_dim)
        self.h_proj = nn.Linear(hidden, hidden)
        if config.relative_positional_bias == "simple":
            self.rel_pos_bias = MegaSimpleRelativePositionalBias(config)
        else:
            self.rel_pos_bias = MegaRotaryRelativePositionalBias(config)

    def project_source(self, encoder_hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states (B, S, H) -> keys (B, S, Z), values (B, S, H); cached once per generation."""
        return self.k_proj(encoder_hidden_states), self.activation(self.v_proj(encoder_hidden_states))

    def forward(
        self,
        x: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        source_keep: torch.Tensor | None = None,
        start: int = 0,
        output_attentions: bool = False,
        attn_implementation: str = "eager",
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, H) at target positions start..start+T-1; key (B, S, Z), value (B, S, H); source_keep (B, S).

        Returns (out (B, T, H), attention weights (B, T, S) or None).
        """
        config = self.config
        hidden, z_dim = config.hidden_size, config.shared_representation_size
        residual = x
        if config.normalize_before_mega:
            x = self.norm(x)
        u, r, query = self.q_proj(x).split([hidden, hidden, z_dim], dim=-1)  # (B, T, H), (B, T, H), (B, T, Z)
        u, r = torch.sigmoid(u), F.silu(r)
        length, sources = query.shape[1], key.shape[1]
        bias = self.rel_pos_bias.rectangle(start, length, sources).to(query.dtype)  # (T, S)
        weights = None
        if config.attention_activation == "softmax" and attn_implementation == "sdpa" and not output_attentions:
            mask = bias  # (T, S)
            if source_keep is not None:
                source_bias = torch.zeros(source_keep.shape, dtype=query.dtype, device=query.device)
                mask = mask + source_bias.masked_fill(~source_keep, float("-inf"))[:, None, :]  # (B, T, S)
            attended = F.scaled_dot_product_attention(
                query.unsqueeze(1),
                key.unsqueeze(1),
                self.hidden_dropout(value).unsqueeze(1),
                attn_mask=mask.unsqueeze(-3),
                dropout_p=self.attention_dropout if self.training else 0.0,
                scale=self.scaling,
            ).squeeze(1)  # (B, 1, T, H) -> (B, T, H)
            h = self.dropout(self.activation(self.h_proj(attended * r)))  # (B, T, H)
            out = torch.addcmul(residual, u, h - residual)
            return (out if config.normalize_before_mega else self.norm(out)), None
        if config.attention_activation == "softmax":
            scores = torch.matmul(query * self.scaling, key.transpose(-1, -2)) + bias  # (B, T, S)
            if source_keep is not None:
                scores = scores.masked_fill(~source_keep[:, None, :], float("-inf"))
            weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        else:
            # element attention: act(q k^T / n + bias) * source mask, n = real sources per row
            if source_keep is not None:
                lengths = source_keep.sum(-1).to(query.dtype)[:, None, None]  # (B, 1, 1)
            else:
                lengths = float(sources)
            scores = torch.matmul(query, key.transpose(-1, -2)) / lengths + bias  # (B, T, S)
            weights = _laplace(scores) if config.attention_activation == "laplace" else F.relu(scores).square()
            if source_keep is not None:
                weights = weights * source_keep[:, None, :].to(weights.dtype)
        probabilities = weights
        if self.training and self.attention_dropout > 0.0:
            probabilities = F.dropout(weights, p=self.attention_dropout, training=True)
        attended = torch.matmul(probabilities, self.hidden_dropout(value))  # (B, T, H)
        h = self.dropout(self.activation(self.h_proj(attended * r)))  # (B, T, H)
        out = torch.addcmul(residual, u, h - residual)  # (1 - u) * residual + u * h
        if not config.normalize_before_mega:
            out = self.norm(out)
        return out, (weights if output_attentions else None)


class MegaNormalizedFeedForwardNetwork(nn.Module):
    """Y = fc2(dropout(act(fc1(norm?(X))))) + X, then norm if post-norm."""

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.prenorm = config.normalize_before_ffn
        self.activation = ACT2FN[config.activation]
        self.inplace_activation = config.activation == "silu"
        self.dropout = MegaDropout(config.dropout_prob, config.use_feature_dropout)
        self.hidden_dropout = MegaDropout(config.nffn_activation_dropout_prob, config.use_feature_dropout)
        self.norm = MegaSequenceNorm(config)
        self.fc1 = nn.Linear(config.hidden_size, config.nffn_hidden_size)
        self.fc2 = nn.Linear(config.nffn_hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        if self.prenorm:
            x = self.norm(x)
        hidden = self.fc1(x)  # (B, L, F)
        if self.inplace_activation and not torch.is_grad_enabled():
            hidden = F.silu(hidden, inplace=True)  # no autograd: spare a (B, L, F) temporary
        else:
            hidden = self.activation(hidden)
        x = self.dropout(self.fc2(self.hidden_dropout(hidden)))  # (B, L, H)
        x = x.add_(residual)  # in place: neither fc2 nor dropout needs its output for backward
        return x if self.prenorm else self.norm(x)


class MegaBlock(GradientCheckpointingLayer):
    """MEGA sublayer, then (decoder with `add_cross_attention`) gated cross-attention, then the normalised FFN."""

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.mega_layer = MegaMovingAverageGatedAttention(config)
        if config.add_cross_attention:
            if not config.is_decoder:
                raise ValueError(
                    "MegaConfig.add_cross_attention (True) needs is_decoder=True: cross-attention belongs to a decoder"
                )
            self.cross_attn = MegaGatedCrossAttention(config)
        else:
            self.cross_attn = None
        self.nffn = MegaNormalizedFeedForwardNetwork(config) if config.use_normalized_ffn else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
        source_keep: torch.Tensor | None = None,
        causal: bool = False,
        output_attentions: bool = False,
        cache: MegaCache | None = None,
        layer_idx: int = 0,
        attn_implementation: str = "eager",
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns (hidden states (B, L, H), self-attention weights or None, cross-attention weights or None)."""
        start = cache.seen_tokens if cache is not None else 0  # absolute position of the first token
        hidden_states, weights = self.mega_layer(
            hidden_states,
            keep,
            causal=causal,
            output_attentions=output_attentions,
            cache=cache,
            layer_idx=layer_idx,
            attn_implementation=attn_implementation,
        )
        cross_weights = None
        if self.cross_attn is not None:
            if cache is not None and cache.cross_keys[layer_idx] is not None:
                key, value = cache.cross_keys[layer_idx], cache.cross_values[layer_idx]
                source_keep = cache.cross_keep
            else:
                if encoder_hidden_states is None:
                    raise ValueError(
                        "this MEGA decoder has cross-attention (add_cross_attention=True) but got no "
                        "encoder_hidden_states: pass the encoder's last hidden state (B, S, hidden_size)"
                    )
                key, value = self.cross_attn.project_source(encoder_hidden_states)  # (B, S, Z), (B, S, H)
                if cache is not None:
                    cache.cross_keys[layer_idx], cache.cross_values[layer_idx] = key, value
                    cache.cross_keep = source_keep
            hidden_states, cross_weights = self.cross_attn(
                hidden_states,
                key,
                value,
                source_keep,
                start=start,
                output_attentions=output_attentions,
                attn_implementation=attn_implementation,
            )
        if self.nffn is not None:
            hidden_states = self.nffn(hidden_states)
        return hidden_states, weights, cross_weights


class MegaPooler(nn.Module):
    """tanh(Dense(h[:, 0]))."""

    def __init__(self, config: MegaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


# ----------------------------------------------------------------------------------------------
# pretrained model classes
# ----------------------------------------------------------------------------------------------


def long_reach_factors(n: int, min_reach: float, max_reach: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(damping_factor, decay_factor), each (n,): EMA dimensions whose reaches are log-spaced from `min_reach`
    to `max_reach` tokens, the init of `MegaConfig(ema_init="long")`.

    A dimension keeps q = 1 - p * sigmoid(decay) of its previous step, so an impulse falls to 1/e after about
    reach = 1 / (1 - q) = 1 / (p * sigmoid(decay)) tokens and its steady-state gain is p / (1 - q) =
    1 / sigmoid(decay). From reach 2 up, sigmoid(decay) = 1/2 and p = 2 / reach: every dimension has gain 2
    (the 4.x init's factors ~N(0, 0.2) give p ~ 1/2, sigmoid(decay) ~ 1/2, reach ~4 and gain ~2). At and below
    reach 2, p = sigmoid(decay) = reach^-1/2 (p would exceed 1 below it, and p = 1 is an infinite logit at it).
    """
    reaches = torch.logspace(math.log10(min_reach), math.log10(max_reach), n, dtype=torch.float64)
    short = reaches <= 2
    p = torch.where(short, reaches.rsqrt(), 2 / reaches)
    decay = torch.where(short, reaches.rsqrt(), torch.full_like(reaches, 0.5))
    return torch.logit(p).float(), torch.logit(decay).float()


def refuse_nonfinite_weights(state_dict: dict[str, torch.Tensor], save_directory: object) -> None:
    """Raise a one-line ValueError naming the floating-point tensors of `state_dict` that hold NaN or inf: the check
    every save of a MEGA model makes (`save_pretrained(..., allow_nonfinite=True)` skips it), and mega2bart's
    `save_mega2bart` and training runs. A sharded tensor (DTensor) is checked on this process's shard."""
    broken = []
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.is_meta:
            continue
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        count = int((~torch.isfinite(local.detach())).sum())
        if count:
            broken.append(f"{name} ({count} of {local.numel()} values)")
    if broken:
        more = f" and {len(broken) - 4} more" if len(broken) > 4 else ""
        raise ValueError(
            f"refusing to save {save_directory}: {len(broken)} weight tensor(s) hold NaN or inf: "
            f"{', '.join(broken[:4])}{more}; the model's outputs would be NaN: fix what made them (a MegaConfig ema_* "
            "setting, a diverged learning rate), or pass allow_nonfinite=True to keep them anyway"
        )


class MegaPreTrainedModel(PreTrainedModel):
    config_class = MegaConfig
    config: MegaConfig
    base_model_prefix = "mega"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["MegaBlock"]
    _keys_to_ignore_on_load_unexpected = [r"embedding_layer\.token_type_ids"]
    # the losses are per-call means (as 4.x): the Trainer must scale them under gradient accumulation
    accepts_loss_kwargs = False

    def save_pretrained(
        self, save_directory: str | os.PathLike, *args, allow_nonfinite: bool = False, **kwargs
    ) -> None:
        """transformers' save, into a folder that loads where mega2bart is not installed: every MEGA class is
        registered for its Auto class (end of this file), so transformers copies this file and
        `configuration_mega.py` beside the weights; config.json's `auto_map` names every head (`MEGA_AUTO_MAP`),
        so any `AutoModelFor*` in it loads the folder with `trust_remote_code=True`. The model's own config
        keeps the `auto_map` it had. NaN/inf weights are refused unless `allow_nonfinite`."""
        if not allow_nonfinite:
            state_dict = kwargs.get("state_dict")
            refuse_nonfinite_weights(self.state_dict() if state_dict is None else state_dict, save_directory)
        config = self.config
        had_map, previous = "auto_map" in config.__dict__, getattr(config, "auto_map", None)
        config.auto_map = {**(previous or {}), **MEGA_AUTO_MAP}
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            if had_map:
                config.auto_map = previous
            else:
                del config.auto_map

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        # MegaModel reads config._attn_implementation on every call and hands it to its blocks, so
        # `set_attn_implementation` takes effect at once (transformers' source heuristic looks for
        # its AttentionInterface, which MEGA's chunked single-head attention does not use)
        return True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The 4.x init (docs/mega.md#initialisation); with `config.ema_init="long"` the EMA's time scales
        are spread instead (`long_reach_factors`)."""
        config = self.config
        if isinstance(module, MegaMultiDimensionDampedEma):
            if getattr(config, "ema_init", None) == "long":
                damping, decay = long_reach_factors(
                    config.ema_projection_size, config.ema_min_reach, config.ema_max_reach or config.max_positions
                )
                init.copy_(module.damping_factor, damping.view(1, -1, 1).expand_as(module.damping_factor))
                init.copy_(module.decay_factor, decay.view(1, -1, 1).expand_as(module.decay_factor))
            else:
                init.normal_(module.damping_factor, mean=0.0, std=config.ema_delta_alpha_range)
                init.normal_(module.decay_factor, mean=0.0, std=config.ema_delta_alpha_range)
            # beta: [1, -1, 1, -1, ...] over components plus noise
            pattern = torch.ones(config.ema_projection_size, 1)
            pattern[1::2] = -1.0
            noise = torch.empty_like(module.ema_expansion_matrix).normal_(0.0, config.ema_beta_range)
            init.copy_(module.ema_expansion_matrix, noise + pattern.to(noise))
            init.normal_(module.kernel_projection_matrix, mean=0.0, std=config.ema_gamma_omega_range)
            init.normal_(module.residual_weight, mean=0.0, std=config.ema_gamma_omega_range)
        elif isinstance(module, MegaSimpleRelativePositionalBias):
            init.normal_(module.rel_pos_bias, mean=0.0, std=config.initializer_range)
        elif isinstance(module, MegaRotaryRelativePositionalBias):
            init.normal_(module.alpha, mean=0.0, std=config.initializer_range)
            init.normal_(module.b_param, mean=0.0, std=config.initializer_range)
            init.zeros_(module._float_tensor)
        elif isinstance(module, MegaScaleNorm):
            if module.scalar is not None:
                init.ones_(module.scalar)
        elif isinstance(module, MegaRMSNorm):
            if module.weight is not None:
                init.ones_(module.weight)
        elif isinstance(module, MegaMovingAverageGatedAttention):
            init.normal_(module.qk_weight, mean=0.0, std=config.initializer_range)
            init.zeros_(module.qk_bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=config.initializer_range)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                init.ones_(module.weight)
                init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.weight is not None:
                init.ones_(module.weight)
                init.zeros_(module.bias)
            if module.running_mean is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)


def _to_keep_mask(
    attention_mask: torch.Tensor | None, shape: tuple[int, int], device: torch.device
) -> torch.Tensor | None:
    """Any 1 = keep / 0 = pad mask (bool, int or float) -> bool (B, L), or None when nothing is padded."""
    if attention_mask is None:
        return None
    if tuple(attention_mask.shape) != tuple(shape):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but the input has shape {tuple(shape)}; "
            "pass a (batch, length) mask with 1 for tokens to keep and 0 for padding"
        )
    keep = attention_mask.to(device=device) != 0
    if torch.compiler.is_compiling():
        return keep  # an all-ones mask gives the same numbers; testing for one would break the graph
    return None if bool(keep.all()) else keep


def _token_slice(t: torch.Tensor | None, start: int, end: int) -> torch.Tensor | None:
    """Positions start:end of a (B, L, ...) input; None stays None."""
    return None if t is None else t[:, start:end]


class MegaModel(MegaPreTrainedModel):
    """The bare MEGA encoder (or causal decoder when `config.is_decoder`), outputting hidden states.

    Inputs of any length work: with chunking, a length above `chunk_size` that is not a multiple of
    it is right-padded (pad id, mask 0) to the next multiple, and every output is sliced back.
    Attention maps (`output_attentions`) keep the padded shape (B, n_chunks, C, C).

    With `config.add_cross_attention` (a decoder), every block also attends to `encoder_hidden_states`
    (B, S, H) through `MegaGatedCrossAttention`; `cross_attentions` are (B, L', S).
    """

    def __init__(self, config: MegaConfig, add_pooling_layer: bool | None = None):
        super().__init__(config)
        if add_pooling_layer is None:
            add_pooling_layer = getattr(config, "use_pooler", True)
        self.embedding_layer = MegaEmbeddings(config)
        self.layers = nn.ModuleList([MegaBlock(config) for _ in range(config.num_hidden_layers)])
        self.pooler = MegaPooler(config) if add_pooling_layer else None
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embedding_layer.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embedding_layer.word_embeddings = value

    def _pad_to_chunks(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        keep: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        length: int,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, int]:
        chunk = self.config.chunk_size
        if not self.config.use_chunking or length <= chunk or length % chunk == 0:
            return input_ids, inputs_embeds, keep, token_type_ids, 0
        extra = chunk - length % chunk
        reference = input_ids if input_ids is not None else inputs_embeds
        batch = reference.shape[0]
        if keep is None:
            keep = torch.ones(batch, length, dtype=torch.bool, device=reference.device)
        keep = F.pad(keep, (0, extra), value=False)
        if input_ids is not None:
            input_ids = F.pad(input_ids, (0, extra), value=self.config.pad_token_id)
        if inputs_embeds is not None:
            inputs_embeds = F.pad(inputs_embeds, (0, 0, 0, extra))
        if token_type_ids is not None:
            token_type_ids = F.pad(token_type_ids, (0, extra), value=0)
        return input_ids, inputs_embeds, keep, token_type_ids, extra

    def _resolve_use_cache(self, use_cache: bool | None, cache: MegaCache | None) -> bool:
        config = self.config
        if not config.is_decoder:
            return False  # an encoder never caches (as 4.x)
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            if use_cache or cache is not None:
                logger.warning_once("use_cache=True is incompatible with gradient checkpointing; not caching")
            return False
        if use_cache is None:
            # the config default (True) only applies where it can: a causal EMA
            return cache is not None or (config.use_cache and not config.bidirectional)
        return use_cache

    def _cache_segments(self, seen: int, length: int) -> list[tuple[int, int]]:
        """Split L new tokens so that no cached call crosses an attention-block boundary.

        A piece that starts inside a block (cached keys present) ends at the block's end; a piece that
        starts at a boundary takes all whole blocks at once, then the remainder goes alone, so no
        chunk padding (which would advance the EMA state over pad tokens) is ever needed.
        """
        if not self.config.use_chunking:
            return [(0, length)]
        chunk = self.config.chunk_size
        segments, start = [], 0
        while start < length:
            offset = (seen + start) % chunk
            if offset:
                end = min(length, start + chunk - offset)
            elif length - start >= chunk:
                end = start + (length - start) // chunk * chunk
            else:
                end = length
            segments.append((start, end))
            start = end
        return segments

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: MegaCache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        past_key_values: MegaCache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions:
        """Hidden states of the input; with `config.is_decoder`, `use_cache` returns/continues a `MegaCache`.

        `past_key_values` is the transformers 4.x name of `cache`. With a cache, `attention_mask`
        may cover the past and new tokens (B, past + L), as `generate()` passes it, or only the new ones.
        `encoder_hidden_states` (B, S, H) and `encoder_attention_mask` (B, S), 1 = keep, feed the
        cross-attention; a cache keeps their projections from its first call and ignores later ones.
        """
        config = self.config
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        cache = cache if cache is not None else past_key_values
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        shape = tuple(input_ids.shape) if input_ids is not None else tuple(inputs_embeds.shape[:-1])
        if len(shape) != 2:
            raise ValueError(f"expected (batch, length) inputs, got shape {shape}")
        device = input_ids.device if input_ids is not None else inputs_embeds.device
        length = shape[1]

        use_cache = self._resolve_use_cache(use_cache, cache)
        if use_cache:
            if cache is None:
                cache = MegaCache(config.num_hidden_layers)
            elif not isinstance(cache, MegaCache):
                raise TypeError(
                    f"MEGA needs its own MegaCache, got {type(cache).__name__}: pass the `cache` returned by "
                    "the previous call (or None to start), not a transformers DynamicCache or a legacy tuple"
                )
            if attention_mask is not None:
                if attention_mask.shape[-1] not in (length, cache.seen_tokens + length):
                    raise ValueError(
                        f"attention_mask covers {attention_mask.shape[-1]} tokens, but the cache has seen "
                        f"{cache.seen_tokens} and the input has {length}: pass a mask over the new tokens or "
                        "over past + new tokens"
                    )
                attention_mask = attention_mask[:, -length:]
            segments = self._cache_segments(cache.seen_tokens, length)
            if len(segments) > 1:
                return self._forward_segments(
                    segments,
                    input_ids,
                    attention_mask,
                    token_type_ids,
                    inputs_embeds,
                    cache,
                    output_attentions,
                    output_hidden_states,
                    encoder_hidden_states,
                    encoder_attention_mask,
                )
        else:
            cache = None

        keep = _to_keep_mask(attention_mask, shape, device)
        source_keep = None
        if encoder_hidden_states is not None and config.add_cross_attention:
            source_keep = _to_keep_mask(encoder_attention_mask, tuple(encoder_hidden_states.shape[:2]), device)
        extra = 0
        if cache is None:
            input_ids, inputs_embeds, keep, token_type_ids, extra = self._pad_to_chunks(
                input_ids, inputs_embeds, keep, token_type_ids, length
            )

        hidden_states = self.embedding_layer(input_ids, token_type_ids, inputs_embeds)  # (B, L', H)
        # Hidden states and attentions are collected here, not by transformers 5's output recording
        # (`_can_record_outputs` hooks): the blocks run on the chunk-padded length L' and every
        # recorded state would need slicing back to L afterwards, and a cached call crossing a block
        # boundary runs several passes (`_forward_segments`) whose outputs are concatenated along L.
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        all_cross = () if output_attentions and config.add_cross_attention else None
        for index, layer in enumerate(self.layers):
            hidden_states, weights, cross_weights = layer(
                hidden_states,
                encoder_hidden_states,
                keep,
                source_keep,
                causal=config.is_decoder,
                output_attentions=output_attentions,
                cache=cache,
                layer_idx=index,
                attn_implementation=config._attn_implementation,
            )
            if output_hidden_states:
                all_hidden += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
                if all_cross is not None:
                    all_cross += (cross_weights,)

        if cache is not None:
            self._advance_cache(cache, keep, shape)
        if extra:
            hidden_states = hidden_states[:, :length]
            if all_hidden is not None:
                all_hidden = tuple(h[:, :length] for h in all_hidden)
            if all_cross is not None:
                all_cross = tuple(w[:, :length] for w in all_cross)
        pooled = self.pooler(hidden_states) if self.pooler is not None else None
        return BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=hidden_states,
            pooler_output=pooled,
            cache=cache,
            hidden_states=all_hidden,
            attentions=all_attentions,
            cross_attentions=all_cross,
        )

    def _advance_cache(self, cache: MegaCache, keep: torch.Tensor | None, shape: tuple[int, int]) -> None:
        """After a cached call of L tokens: count them and keep the padding of the cached block keys."""
        batch, length = shape
        cached = next((k.shape[1] for k in cache.keys if k is not None), 0)
        if cached and (keep is not None or cache.key_keep is not None):
            new = keep if keep is not None else torch.ones(batch, length, dtype=torch.bool, device=cache.keys[0].device)
            old = cache.key_keep
            if old is None:
                old = torch.ones(batch, max(cache.seen_tokens, 0), dtype=torch.bool, device=new.device)
            cache.key_keep = torch.cat([old, new], dim=1)[:, -cached:]  # (B, r)
        else:
            cache.key_keep = None
        cache.seen_tokens += length

    def _forward_segments(
        self,
        segments: list[tuple[int, int]],
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        cache: MegaCache,
        output_attentions: bool,
        output_hidden_states: bool,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions:
        """A cached call split at attention-block boundaries; outputs are concatenated along L."""
        if output_attentions:
            raise ValueError(
                "output_attentions with a cached call that crosses an attention-block boundary is not supported: "
                "feed at most chunk_size - (seen % chunk_size) tokens per cached call"
            )
        pieces = []
        for start, end in segments:
            pieces.append(
                self(
                    input_ids=_token_slice(input_ids, start, end),
                    attention_mask=_token_slice(attention_mask, start, end),
                    token_type_ids=_token_slice(token_type_ids, start, end),
                    inputs_embeds=_token_slice(inputs_embeds, start, end),
                    encoder_hidden_states=encoder_hidden_states,
                    encoder_attention_mask=encoder_attention_mask,
                    cache=cache,
                    use_cache=True,
                    output_hidden_states=output_hidden_states,
                    return_dict=True,
                )
            )
        hidden_states = torch.cat([out.last_hidden_state for out in pieces], dim=1)  # (B, L, H)
        all_hidden = None
        if output_hidden_states:
            all_hidden = tuple(
                torch.cat(layer, dim=1) for layer in zip(*(out.hidden_states for out in pieces), strict=True)
            )
        return BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=hidden_states,
            pooler_output=self.pooler(hidden_states) if self.pooler is not None else None,
            cache=cache,
            hidden_states=all_hidden,
        )


class MegaForMaskedLM(MegaPreTrainedModel):
    """MEGA with the MLM head: logits = [tanh(Dense(h))] W_emb^T + b, W tied to the word embeddings."""

    _tied_weights_keys = {"mlm_head.weight": "mega.embedding_layer.word_embeddings.weight"}

    def __init__(self, config: MegaConfig):
        super().__init__(config)
        if config.is_decoder:
            logger.warning("MegaForMaskedLM expects a bidirectional encoder; config.is_decoder=True makes it causal")
        self.mega = MegaModel(config, add_pooling_layer=False)
        if config.add_lm_hidden_dense_layer:
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)
            self.hidden_activation = nn.Tanh()
        else:
            self.dense = None
            self.hidden_activation = None
        self.mlm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.mlm_head = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        outputs = self.mega(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        hidden = outputs.last_hidden_state
        if self.dense is not None:
            hidden = self.hidden_activation(self.dense(hidden))
        logits = self.mlm_head(hidden)  # (B, L, V)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.config.vocab_size), labels.to(logits.device).view(-1))
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


# ----------------------------------------------------------------------------------------------
# task heads (the 4.x port's classes, attribute names and losses)
# ----------------------------------------------------------------------------------------------


class MegaForCausalLM(MegaPreTrainedModel, GenerationMixin):
    """Causal MEGA with an LM head: logits = [tanh(Dense(h))] W_emb^T + b, W tied to the word embeddings.

    Needs `config.is_decoder=True` (causal attention) and, for a causal model and for incremental
    decoding, `config.bidirectional=False`. The decoding state is a `MegaCache` (EMA state plus the
    keys/values of the current attention block), returned as `cache` and accepted by `generate()`.
    """

    _tied_weights_keys = {"lm_head.weight": "mega.embedding_layer.word_embeddings.weight"}
    _is_stateful = True  # the EMA state cannot be rewound: no assisted generation

    def __init__(self, config: MegaConfig):
        super().__init__(config)
        if not config.is_decoder:
            logger.warning(
                "MegaForCausalLM needs config.is_decoder=True for causal attention; without it, it sees the future"
            )
        if config.bidirectional:
            logger.warning(
                "MegaForCausalLM with config.bidirectional=True: the backward EMA sees future tokens and "
                "incremental decoding (use_cache) is impossible; use bidirectional=False for a causal LM"
            )
        self.mega = MegaModel(config, add_pooling_layer=False)
        if config.add_lm_hidden_dense_layer:
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)
            self.hidden_activation = nn.Tanh()
        else:
            self.dense = None
            self.hidden_activation = None
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # generate() must not build a DynamicCache: the model makes its own MegaCache

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        cache: MegaCache | None = None,
        **kwargs,
    ) -> dict:
        """As GenerationMixin's, but a model that cannot cache (not `is_decoder`, or a bidirectional EMA)
        gets the whole sequence at every step: generate() would otherwise pass only the last token
        (it trims whenever `use_cache` is set), and the model would predict from that token alone."""
        if not self.config.is_decoder or self.config.bidirectional:
            next_sequence_length, cache = None, None
            kwargs["use_cache"] = False
        return super().prepare_inputs_for_generation(
            input_ids, next_sequence_length=next_sequence_length, cache=cache, **kwargs
        )

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: MegaCache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        past_key_values: MegaCache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithCrossAttentions:
        """`labels` (B, L) are the input ids (shifted inside; -100 ignored); they turn caching off, as 4.x."""
        if labels is not None:
            use_cache = False
        outputs = self.mega(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            cache=cache if cache is not None else past_key_values,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        hidden = outputs.last_hidden_state
        if self.dense is not None:
            hidden = self.hidden_activation(self.dense(hidden))
        logits = self.lm_head(hidden)  # (B, L, V)
        loss = None
        if labels is not None:
            # predict token t+1 from positions <= t
            shifted = logits[:, :-1].reshape(-1, self.config.vocab_size)  # (B*(L-1), V)
            loss = CrossEntropyLoss()(shifted, labels[:, 1:].to(logits.device).reshape(-1))
        return CausalLMOutputWithCrossAttentions(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            cross_attentions=outputs.cross_attentions,
        )


class MegaClassificationHead(nn.Module):
    """RoBERTa-style sentence head on token 0: dropout, dense, tanh, dropout, out_proj."""

    def __init__(self, config: MegaConfig):
        super().__init__()
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.dropout(hidden_states[:, 0])  # (B, H): the <s> token
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out_proj(x)  # (B, num_labels)


class MegaForSequenceClassification(MegaPreTrainedModel):
    """MEGA with `MegaClassificationHead`; loss by `config.problem_type` (inferred from labels if unset)."""

    def __init__(self, config: MegaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mega = MegaModel(config, add_pooling_layer=False)
        self.classifier = MegaClassificationHead(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        outputs = self.mega(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.classifier(outputs.last_hidden_state)  # (B, num_labels)
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            if self.config.problem_type is None:
                if self.num_labels == 1:
                    self.config.problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    self.config.problem_type = "single_label_classification"
                else:
                    self.config.problem_type = "multi_label_classification"
            if self.config.problem_type == "regression":
                if self.num_labels == 1:
                    loss = MSELoss()(logits.squeeze(), labels.squeeze())
                else:
                    loss = MSELoss()(logits, labels)
            elif self.config.problem_type == "single_label_classification":
                loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
            else:
                loss = BCEWithLogitsLoss()(logits, labels)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class MegaForMultipleChoice(MegaPreTrainedModel):
    """Scores each choice by Linear(pooler(h)); inputs are (B, num_choices, L), flattened inside."""

    def __init__(self, config: MegaConfig):
        super().__init__(config)
        # the pooler whatever `config.use_pooler` says (False in a built model's encoder): this head reads it
        self.mega = MegaModel(config, add_pooling_layer=True)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> MultipleChoiceModelOutput:
        num_choices = input_ids.shape[1] if input_ids is not None else inputs_embeds.shape[1]

        def flat(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.reshape(-1, *t.shape[2:])  # (B, C, L, ...) -> (B*C, L, ...)

        outputs = self.mega(
            flat(input_ids),
            attention_mask=flat(attention_mask),
            token_type_ids=flat(token_type_ids),
            inputs_embeds=flat(inputs_embeds),
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))  # (B*C, 1)
        logits = logits.view(-1, num_choices)  # (B, C)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits, labels.to(logits.device))
        return MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class MegaForTokenClassification(MegaPreTrainedModel):
    """Per-token logits Linear(dropout(h)); cross-entropy with -100 ignored."""

    def __init__(self, config: MegaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mega = MegaModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        outputs = self.mega(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))  # (B, L, num_labels)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.to(logits.device).view(-1))
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class MegaForQuestionAnswering(MegaPreTrainedModel):
    """Span extraction: `qa_outputs` gives start and end logits per token."""

    def __init__(self, config: MegaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mega = MegaModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> QuestionAnsweringModelOutput:
        outputs = self.mega(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.qa_outputs(outputs.last_hidden_state)  # (B, L, num_labels)
        start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1))  # 2 x (B, L)
        loss = None
        if start_positions is not None and end_positions is not None:
            # positions outside the sequence are clamped to L and ignored
            ignored = start_logits.shape[1]
            start = start_positions.reshape(-1).clamp(0, ignored).to(logits.device)
            end = end_positions.reshape(-1).clamp(0, ignored).to(logits.device)
            loss_fct = CrossEntropyLoss(ignore_index=ignored)
            loss = (loss_fct(start_logits, start) + loss_fct(end_logits, end)) / 2
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


# ----------------------------------------------------------------------------------------------
# remote code: what makes a saved MEGA folder load where mega2bart is not installed
# ----------------------------------------------------------------------------------------------

MEGA_AUTO_CLASSES: dict[str, type[MegaPreTrainedModel]] = {
    "AutoModel": MegaModel,
    "AutoModelForMaskedLM": MegaForMaskedLM,
    "AutoModelForSequenceClassification": MegaForSequenceClassification,
    "AutoModelForTokenClassification": MegaForTokenClassification,
    "AutoModelForQuestionAnswering": MegaForQuestionAnswering,
    "AutoModelForMultipleChoice": MegaForMultipleChoice,
    "AutoModelForCausalLM": MegaForCausalLM,
}
"""Every transformers Auto class with a MEGA model, and that model (mega2bart's registration uses it too)."""
_MODULE = __name__.rpartition(".")[2]  # "modeling_mega", in the package and as remote code alike
MEGA_AUTO_MAP: dict[str, str] = {
    "AutoConfig": f"{MegaConfig.__module__.rpartition('.')[2]}.{MegaConfig.__name__}",
    **{auto_class: f"{_MODULE}.{model_class.__name__}" for auto_class, model_class in MEGA_AUTO_CLASSES.items()},
}
"""The `auto_map` of every saved MEGA config.json: file.class for AutoConfig and each Auto class above."""

# transformers' custom-code mechanism: `save_pretrained` of a registered class copies its file and the sibling
# files it imports relatively (configuration_mega.py) into the folder (`custom_object_save`)
for _auto_class, _model_class in MEGA_AUTO_CLASSES.items():
    _model_class.register_for_auto_class(_auto_class)


__all__ = [
    "MEGA_AUTO_CLASSES",
    "MEGA_AUTO_MAP",
    "MegaCache",
    "MegaForCausalLM",
    "MegaForMaskedLM",
    "MegaForMultipleChoice",
    "MegaForQuestionAnswering",
    "MegaForSequenceClassification",
    "MegaForTokenClassification",
    "MegaModel",
    "MegaPreTrainedModel",
]

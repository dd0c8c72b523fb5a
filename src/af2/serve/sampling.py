"""Per-row token choice for a batch whose rows each have their own decoding options.

Greedy rows take the argmax. Sampling rows use the Gumbel-max trick with noise from a counter-based
hash of (seed, step, token id), so a seeded request draws the same tokens whether it decodes alone
or beside any other rows, and no per-row random generator (or Python loop over rows) is needed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import torch

_MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class RowOptions:
    """One request's decoding options (the OpenAI parameters the server honours)."""

    temperature: float = 0.0  # 0 = greedy, as the official benchmarks decode
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass(frozen=True)
class SamplingTensors:
    """Every row's options as (B,) tensors, so a step chooses all rows' tokens at once."""

    greedy: torch.Tensor  # bool
    temperature: torch.Tensor  # float32; 1 for greedy rows (unused there)
    top_k: torch.Tensor  # int64; 0 = off
    top_p: torch.Tensor  # float32
    seed: torch.Tensor  # int64, 0 <= seed < 2**63

    @staticmethod
    def of(rows: list[RowOptions], device: torch.device) -> SamplingTensors:
        # A request without a seed gets a fresh one: sampling stays random across requests.
        seeds = [r.seed if r.seed is not None else secrets.randbits(63) for r in rows]
        return SamplingTensors(
            greedy=torch.tensor([r.greedy for r in rows], dtype=torch.bool, device=device),
            temperature=torch.tensor([r.temperature if not r.greedy else 1.0 for r in rows], device=device),
            top_k=torch.tensor([r.top_k for r in rows], dtype=torch.long, device=device),
            top_p=torch.tensor([r.top_p for r in rows], device=device),
            seed=torch.tensor([s % (1 << 63) for s in seeds], dtype=torch.long, device=device))

    def select(self, index: torch.Tensor) -> SamplingTensors:
        return SamplingTensors(*(t[index] for t in self._fields()))

    def cat(self, other: SamplingTensors) -> SamplingTensors:
        return SamplingTensors(*(torch.cat([a, b]) for a, b in zip(self._fields(), other._fields())))

    def _fields(self) -> tuple[torch.Tensor, ...]:
        return self.greedy, self.temperature, self.top_k, self.top_p, self.seed


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for 0 <= x < 2**32, split in 16-bit halves so int64 never overflows."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _MASK32


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash with good avalanche (Wellons' "lowbias32" constants)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def gumbel_noise(seed: torch.Tensor, step: torch.Tensor, vocab: int) -> torch.Tensor:
    """(R,) seeds and (R,) step counters → (R, V) standard Gumbel noise, a pure function of its inputs."""
    key = _mix(_mix(seed & _MASK32) ^ _mix((seed >> 32) ^ 0x5BD1E995))
    key = _mix(key ^ _mix(step & _MASK32))  # (R,)
    ids = _mix(torch.arange(vocab, device=seed.device, dtype=torch.long) ^ 0x9E3779B9)  # (V,)
    bits = _mix(key[:, None] ^ ids[None, :])  # (R, V) in [0, 2**32)
    u = (bits.double() + 0.5) / float(1 << 32)  # strictly inside (0, 1)
    return (-torch.log(-torch.log(u))).float()


def choose(logits: torch.Tensor, opts: SamplingTensors, step: torch.Tensor) -> torch.Tensor:
    """(B, V) next-token logits, every row's options and (B,) step counters → (B,) token ids."""
    tokens = logits.float().argmax(dim=-1)  # the same index; PyTorch's bf16 argmax is 5x slower on CPUs
    sample = ~opts.greedy
    if not bool(sample.any()):
        return tokens
    rows = sample.nonzero().squeeze(1)
    scaled = logits[rows].float() / opts.temperature[rows, None]
    ranked, order = scaled.sort(dim=-1, descending=True)  # (R, V)
    V = ranked.shape[-1]
    k = opts.top_k[rows]
    k = torch.where(k > 0, k, torch.full_like(k, V))
    drop = torch.arange(V, device=logits.device)[None, :] >= k[:, None]
    probs = ranked.masked_fill(drop, float("-inf")).softmax(dim=-1)
    # Drop tokens once the mass *before* them reaches top_p (the first always stays).
    drop |= (probs.cumsum(dim=-1) - probs) >= opts.top_p[rows, None]
    noise = gumbel_noise(opts.seed[rows], step[rows], V).gather(1, order)
    pick = (ranked.masked_fill(drop, float("-inf")) + noise).argmax(dim=-1, keepdim=True)
    tokens[rows] = order.gather(1, pick).squeeze(1)
    return tokens

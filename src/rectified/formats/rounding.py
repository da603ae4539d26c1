"""Reproducible random bits, and stochastic rounding to bfloat16.

The bits are counter-based: a pure function of (seed, step, tensor, element), the finaliser of
MurmurHash3 (``fmix32``) applied to a key and an element counter. Every engine draws the same
bits, and a run resumed from a checkpoint draws the bits the uninterrupted run would have.

    key  = fmix32 chain of (seed low/high words, step low/high words, tensor)
    h_i  = fmix32(i · 0x9E3779B1 + key)           (32 bits per element i)
    first moment: h_i & 0xFFFF;  second moment: h_i >> 16;  parameter: fmix32(h_i ^ SALT) >> 16

Stochastic rounding of a float32 x to bfloat16 adds 16 random bits r to x's bit pattern and
drops the low 16 bits: x rounds up with probability (dropped bits) / 2^16, so E[round(x)] = x
for every finite x (Connolly, Higham and Mary, "Stochastic rounding and its probabilistic
backward error analysis", 2021). An update smaller than half a bfloat16 ulp, which rounding to
nearest loses every time, then moves the parameter on average.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

WORD = 0xFFFFFFFF
GOLDEN = 0x9E3779B1
PARAM_SALT = 0x5BD1E995


def fmix32(h: Any) -> Any:
    """MurmurHash3's finaliser on 32-bit words: a Python int, or an int64 tensor of them."""
    h = h & WORD
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & WORD
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & WORD
    return h ^ (h >> 16)


def stream_key(seed: int, step: int, tensor: int) -> int:
    """The key of one tensor's bits at one step."""
    key = fmix32((seed & WORD) ^ 0x9E3779B9)
    for word in ((seed >> 32) & WORD, step & WORD, (step >> 32) & WORD, tensor & WORD):
        key = fmix32(key ^ word)
    return key


def element_bits(key: int, n: int, device: torch.device | str = "cpu") -> Tensor:
    """32 random bits for each of ``n`` elements (int64 tensor)."""
    counter = torch.arange(n, dtype=torch.int64, device=device)
    return fmix32(counter * GOLDEN + key)


def first_moment_bits(bits: Tensor) -> Tensor:
    return bits & 0xFFFF


def second_moment_bits(bits: Tensor) -> Tensor:
    return bits >> 16


def parameter_bits(bits: Tensor) -> Tensor:
    return fmix32(bits ^ PARAM_SALT) >> 16


def to_bfloat16_stochastic(x: Tensor, random16: Tensor) -> Tensor:
    """``x`` (float32) rounded to bfloat16 stochastically with ``random16`` (16 random bits per
    element, flat). Infinities stay, NaN stays a (quiet) NaN; a finite value above the largest
    bfloat16 may round up to inf, as it would with probability 1 rounding to nearest."""
    bits = x.float().contiguous().view(torch.int32).reshape(-1).to(torch.int64) & WORD
    rounded = ((bits + random16) >> 16) & 0xFFFF
    not_finite = (bits & 0x7F800000) == 0x7F800000
    rounded = torch.where(not_finite, (bits >> 16) | ((bits & 0x7FFFFF) != 0).long() << 6,
                          rounded)
    rounded = torch.where(rounded >= 0x8000, rounded - 0x10000, rounded)
    return rounded.to(torch.int16).view(torch.bfloat16).view(x.shape)

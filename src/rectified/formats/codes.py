"""Blockwise 8-bit codes of a moment tensor: uint8 codes of a small floating-point format, and
one float32 scale per block of :data:`BLOCK` elements.

A tensor x of n elements is cut into blocks of 256 (the last may be short). For each block:

    a     = max |x| over the block's finite elements
    scale = a / MAXV                 (0 when a < 2^-100: the block encodes to 0)
    code  = the code of x / scale    (rounded to nearest even, or stochastically)
    x̂     = value(code) · |scale|

Non-finite elements get the top code (all ones), and the block's scale gets its sign bit set
(a mark; decoding uses |scale|), so a NaN or inf never spoils the scale of the finite values
beside it. The top code is NaN for m, and +inf for v (whatever the block's scale): v is >= 0,
and turns inf when a gradient's square overflows, where float32 state keeps v = inf and the
step m / (√v + ε) = 0; a v that is NaN comes with a NaN m, so the step is NaN either way.

Two code maps, after the 8-bit floats of Micikevicius et al. (arXiv 2209.05433) and the
blockwise 8-bit state of Dettmers et al. (arXiv 2110.02861), chosen by measured error on the
moments of real runs (docs/optimizers.md, "State formats"):

* :data:`SIGNED` (the first moment m): e4m3, torch's ``float8_e4m3fn`` (sign, 4 exponent bits
  with bias 7, 3 mantissa bits, subnormals, magnitude 0x7F = NaN), MAXV = 448.
* :data:`UNSIGNED` (the second moment v and its running maximum): ue5m3, unsigned (5 exponent
  bits with bias 15, 3 mantissa bits, subnormals, 0xFF = +inf), MAXV = 1.75 · 2^16. A positive
  v never encodes to 0 (it takes the smallest code instead): a v rounded to 0 under a non-zero
  m makes m / (√v + ε) explode in the first steps, where v is tiny. The exception is a block
  whose largest v is below 2^-100 (7.9e-31: √v below 1e-15, gradients below about 3e-14
  throughout the block), which is stored as zeros: its scale would not be a normal float32.
  That matters only where ε is below about 1e-14 (ε = 0, or 1e-16).

The relative range of m's codes (2^17.8) is not coarser than that of √v's (2^16.9), so no
small m is rounded up to a code whose quotient by a small √v explodes.

Stochastic rounding adds 16 random bits below the kept mantissa bits before truncating, so the
stored value is unbiased (to 2^-16 of a code step): a moving average whose step per update is
below half a code step (v with β2 = 0.999 changes by 0.1%) then still moves on average, where
round-to-nearest would freeze it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

BLOCK = 256
SCALES = "_scales"  # a moment's key + this: the key of its scales in a state entry
TINY = 2.0**-100


class CodeMap(NamedTuple):
    exponent_bits: int
    mantissa_bits: int
    signed: bool
    smallest_nonzero: bool  # a positive value never encodes to 0

    @property
    def bias(self) -> int:
        return 2 ** (self.exponent_bits - 1) - 1

    @property
    def largest_magnitude(self) -> int:
        """The largest finite magnitude code (all ones is NaN)."""
        return (1 << (self.exponent_bits + self.mantissa_bits)) - 2

    @property
    def max_value(self) -> float:
        e, m = self.exponent_bits, self.mantissa_bits
        return (2 - 2.0 ** (1 - m)) * 2.0 ** (2**e - 1 - self.bias)


SIGNED = CodeMap(4, 3, signed=True, smallest_nonzero=False)
UNSIGNED = CodeMap(5, 3, signed=False, smallest_nonzero=True)


def blocks(x: Tensor) -> Tensor:
    """``x`` flattened as float32 rows of :data:`BLOCK` (the last padded with zeros)."""
    flat = x.reshape(-1).float()
    pad = (-flat.numel()) % BLOCK
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, BLOCK)


def scale_count(numel: int) -> int:
    return -(-numel // BLOCK)


def _magnitude_codes(y: Tensor, code_map: CodeMap, random16: Tensor | None) -> Tensor:
    """int32 codes of finite ``y >= 0`` (at most MAXV up to one rounding)."""
    m, bias = code_map.mantissa_bits, code_map.bias
    shift = 23 - m  # the float32 mantissa bits dropped
    bits = y.view(torch.int32)
    subnormal = y < 2.0 ** (1 - bias)
    units = torch.where(subnormal, y, 0.0) * 2.0 ** (bias - 1 + m)  # in smallest steps; exact
    if random16 is None:
        sub = torch.round(units).to(torch.int32)  # half to even
        normal = (bits + ((1 << (shift - 1)) - 1) + ((bits >> shift) & 1)) >> shift
    else:
        sub = (torch.round(units * 65536.0).to(torch.int32) + random16) >> 16
        normal = (bits + (random16 << (shift - 16))) >> shift
    normal = normal - ((127 - bias) << m)  # rebias the exponent
    return torch.clamp(torch.where(subnormal, sub, normal), max=code_map.largest_magnitude)


def encode(x: Tensor, code_map: CodeMap, random16: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(uint8 codes of ``x``'s shape, float32 scales, one per block). ``random16``: 16 random
    bits per element (an integer tensor of ``x.numel()`` values) for stochastic rounding; None
    rounds to nearest even."""
    n = x.numel()
    xb = blocks(x)
    finite = torch.isfinite(xb)
    absmax = torch.where(finite, xb.abs(), 0.0).amax(dim=1)
    nonzero = absmax >= TINY
    safe = torch.where(nonzero, absmax, 1.0)
    scale = torch.where(nonzero, safe / code_map.max_value, 0.0)
    y = xb * torch.where(nonzero, code_map.max_value / safe, 0.0)[:, None]
    bits = None if random16 is None else blocks(random16).to(torch.int32)
    codes = _magnitude_codes(torch.where(finite, y.abs(), 0.0), code_map, bits)
    if code_map.smallest_nonzero:
        codes = torch.where((codes == 0) & (xb > 0), 1, codes)
    codes = torch.where(finite, codes, code_map.largest_magnitude + 1)
    if code_map.signed:
        codes = codes | ((y.view(torch.int32) < 0).to(torch.int32) << 7)
    scale = torch.where((~finite).any(dim=1), -scale, scale)
    return codes.reshape(-1)[:n].to(torch.uint8).view(x.shape), scale


def code_values(code_map: CodeMap, device: torch.device | str = "cpu") -> Tensor:
    """The value of each of the 256 codes (float32; the top codes NaN, or +inf unsigned)."""
    m, bias = code_map.mantissa_bits, code_map.bias
    code = torch.arange(256, device=device)
    magnitude = code & 0x7F if code_map.signed else code
    exponent, fraction = magnitude >> m, (magnitude & ((1 << m) - 1)).double()
    value = torch.where(
        exponent == 0, fraction * 2.0 ** (1 - bias - m),
        (1 + fraction / 2**m) * torch.pow(2.0, (exponent - bias).double()))
    top = float("nan") if code_map.signed else float("inf")
    value = torch.where(magnitude == code_map.largest_magnitude + 1, top, value)
    if code_map.signed:
        value = torch.where(code >= 128, -value, value)
    return value.float()


_VALUES: dict[tuple[CodeMap, torch.device], Tensor] = {}


def decode(codes: Tensor, scales: Tensor, code_map: CodeMap) -> Tensor:
    """The float32 values ``codes`` and ``scales`` stand for, of ``codes``' shape."""
    key = (code_map, codes.device)
    if key not in _VALUES:
        _VALUES[key] = code_values(code_map, codes.device)
    n = codes.numel()
    values = blocks(_VALUES[key][codes.reshape(-1).long()]) * scales.abs()[:, None]
    if not code_map.signed:  # +inf whatever the scale (a block of zeros and infs has scale 0)
        values = torch.where(blocks(codes) == code_map.largest_magnitude + 1, math.inf, values)
    return values.reshape(-1)[:n].view(codes.shape)

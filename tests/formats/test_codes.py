"""The 8-bit block codes and the stochastic rounding, against exact values and their bounds."""

from __future__ import annotations

import math

import pytest
import torch

from rectified.formats import codes, rounding

MAPS = {"signed": codes.SIGNED, "unsigned": codes.UNSIGNED}
# The documented error bounds (docs/optimizers.md, "State formats"): relative to the element,
# or absolute relative to the block's largest magnitude a, whichever is larger.
BOUNDS = {  # (relative, absolute / a): nearest, stochastic
    ("signed", False): (2.0**-4, 2.0**-18), ("signed", True): (2.0**-3, 2.0**-17),
    ("unsigned", False): (2.0**-4, 2.0**-33), ("unsigned", True): (2.0**-3, 2.0**-33),
}


def _sample(kind: str, n: int = 256 * 40 + 17, seed: int = 0) -> torch.Tensor:
    """Values over many orders of magnitude, blocks of very different scales, exact zeros."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=generator) * torch.exp(8 * torch.randn(n, generator=generator))
    x[::97] = 0.0
    x[: 3 * 256] *= 1e-20
    return x.abs().square() if kind == "unsigned" else x


def test_signed_values_are_torchs_float8_e4m3fn():
    ours = codes.code_values(codes.SIGNED)
    torchs = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    assert torch.equal(ours.isnan(), torchs.isnan())
    assert torch.equal(ours[~ours.isnan()], torchs[~torchs.isnan()])
    assert codes.SIGNED.max_value == 448.0
    assert codes.UNSIGNED.max_value == 1.75 * 2**16


def test_signed_nearest_encoding_is_torchs_conversion():
    x = _sample("signed")
    encoded, scales = codes.encode(x, codes.SIGNED)
    absmax = codes.blocks(x).abs().amax(dim=1)
    assert torch.equal(scales, torch.where(absmax >= codes.TINY, absmax / 448.0, 0.0))
    y = codes.blocks(x) * torch.where(absmax >= codes.TINY, 448.0 / absmax, 0.0)[:, None]
    expected = y.to(torch.float8_e4m3fn).view(torch.uint8).reshape(-1)[: x.numel()]
    assert torch.equal(encoded, expected)


@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("kind", list(MAPS))
def test_round_trip_error_within_bound(kind, stochastic):
    x = _sample(kind)
    bits = rounding.element_bits(rounding.stream_key(1, 2, 3), x.numel()) & 0xFFFF
    encoded, scales = codes.encode(x, MAPS[kind], bits if stochastic else None)
    assert encoded.dtype == torch.uint8 and encoded.shape == x.shape
    assert scales.shape == (codes.scale_count(x.numel()),) and scales.dtype == torch.float32
    decoded = codes.decode(encoded, scales, MAPS[kind])
    relative, absolute = BOUNDS[(kind, stochastic)]
    absmax = codes.blocks(x).abs().amax(dim=1).repeat_interleave(codes.BLOCK)[: x.numel()]
    bound = torch.maximum(relative * x.abs(), absolute * absmax)
    excess = (decoded - x).abs() - bound
    assert excess.max() <= 0, float(excess.max())
    assert torch.equal(decoded[x == 0], x[x == 0])
    if kind == "unsigned":  # a positive value never becomes 0
        assert not ((x > 0) & (decoded == 0)).any()


@pytest.mark.parametrize("kind", list(MAPS))
def test_stochastic_rounding_is_unbiased(kind):
    # One block, one value between two codes, drawn 20,000 times (different keys).
    x = torch.full((256,), 0.3)
    x[0] = 1.0  # the block's largest magnitude: the scale
    draws = 20_000 // 255 + 1
    total = torch.zeros(255, dtype=torch.float64)
    for key in range(draws):
        bits = rounding.element_bits(rounding.stream_key(7, key, 0), 256) >> 16
        decoded = codes.decode(*codes.encode(x, MAPS[kind], bits), MAPS[kind])
        total += decoded[1:].double()
    mean = (total / draws).mean().item()
    nearest = codes.decode(*codes.encode(x, MAPS[kind]), MAPS[kind])[1].item()
    assert nearest != pytest.approx(0.3, abs=1e-4)  # 0.3 is no code: rounding is visible
    standard_error = 0.3 * 2.0**-3 / math.sqrt(draws * 255)
    assert abs(mean - 0.3) < 5 * standard_error + 2.0**-16 * 0.3


def test_non_finite_values_keep_their_block_scale():
    x = torch.linspace(-2, 3, 512)
    x[5], x[300] = float("nan"), float("inf")
    encoded, scales = codes.encode(x, codes.SIGNED)
    assert (scales < 0).tolist() == [True, True]  # both blocks marked
    decoded = codes.decode(encoded, scales, codes.SIGNED)
    assert decoded[5].isnan() and decoded[300].isnan()
    finite = x.isfinite()
    clean = codes.decode(*codes.encode(torch.where(finite, x, 0.0), codes.SIGNED), codes.SIGNED)
    assert torch.equal(decoded[finite], clean[finite])  # the scale came from finite values


def test_v_that_overflowed_stays_inf_and_nan_stays_nan_in_the_step():
    """v's top code is +inf, also in a block whose finite values are all 0 (scale 0): an
    overflowed v stays inf, as in float32 state; m's top code is NaN."""
    v = torch.zeros(512)
    v[3], v[7], v[300] = float("inf"), float("nan"), float("inf")
    v[301] = 2.0
    encoded, scales = codes.encode(v, codes.UNSIGNED)
    decoded = codes.decode(encoded, scales, codes.UNSIGNED)
    assert scales[0].abs() == 0 and torch.signbit(scales).tolist() == [True, True]
    assert decoded[3] == math.inf and decoded[7] == math.inf and decoded[300] == math.inf
    assert decoded[301] == 2.0 and (decoded[[0, 1, 256]] == 0).all()
    assert codes.code_values(codes.UNSIGNED)[255] == math.inf
    assert codes.code_values(codes.SIGNED)[[0x7F, 0xFF]].isnan().all()


def test_bfloat16_stochastic_rounding_is_unbiased_and_exact_on_bfloat16_values():
    x = torch.full((100_000,), 1.0 + 2.0**-10)  # 1/8 of the way from 1 to the next bfloat16
    bits = rounding.parameter_bits(rounding.element_bits(rounding.stream_key(0, 1, 0), x.numel()))
    rounded = rounding.to_bfloat16_stochastic(x, bits)
    assert set(rounded.float().unique().tolist()) == {1.0, 1.0 + 2.0**-7}
    up = (rounded.float() > 1).double().mean().item()
    assert abs(up - 0.125) < 5 * math.sqrt(0.125 * 0.875 / x.numel())
    exact = torch.randn(1000).bfloat16().float()
    assert torch.equal(rounding.to_bfloat16_stochastic(exact, bits[:1000]).float(), exact)
    special = torch.tensor([float("inf"), -float("inf"), float("nan"), 0.0, -0.0])
    out = rounding.to_bfloat16_stochastic(special, bits[:5]).float()
    assert out[0] == math.inf and out[1] == -math.inf and out[2].isnan()
    assert out[3] == 0 and out[4] == 0


def test_random_bits_are_a_function_of_seed_step_tensor_element():
    a = rounding.element_bits(rounding.stream_key(1, 5, 2), 1000)
    assert torch.equal(a, rounding.element_bits(rounding.stream_key(1, 5, 2), 1000))
    for other in ((2, 5, 2), (1, 6, 2), (1, 5, 3), (1 << 32 | 1, 5, 2), (1, 5 + (1 << 32), 2)):
        b = rounding.element_bits(rounding.stream_key(*other), 1000)
        assert (a == b).float().mean() < 0.01
    assert int(a.min()) >= 0 and int(a.max()) < 2**32
    # Each of the 32 bits is set about half the time.
    ones = torch.stack([(a >> k) & 1 for k in range(32)]).double().mean(dim=1)
    assert ((ones - 0.5).abs() < 0.07).all()


# -- the fused engine's kernel computes the same codes ------------------------------------------
def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal, NaN where NaN (their payloads may differ)."""
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a[~a.isnan()], b[~b.isnan()])


def _awkward(n: int = 256 * 9 + 100) -> torch.Tensor:
    x = _sample("signed", n)
    x[5], x[300], x[301], x[900] = float("nan"), float("inf"), -float("inf"), -0.0
    x[256 * 4: 256 * 5] = 0.0  # a block of zeros
    x[256 * 6: 256 * 7] = 0.0  # and one of zeros and an inf (scale 0)
    x[256 * 6 + 9] = float("inf")
    return x


@pytest.mark.parametrize("kind", list(MAPS))
@pytest.mark.parametrize("shift", [-1, 0, 16])
def test_the_kernel_encodes_and_decodes_as_the_definition(kind, shift, fused_kernel):
    from rectified.engines.fused import kernel

    assert kernel.load_formats()
    x = _awkward()
    x = x.abs().square() if kind == "unsigned" else x
    stream = rounding.stream_key(3, 11, 2)
    random16 = None if shift < 0 else (rounding.element_bits(stream, x.numel()) >> shift) & 0xFFFF
    expected_codes, expected_scales = codes.encode(x, MAPS[kind], random16)
    got_codes = torch.empty_like(expected_codes)
    got_scales = torch.empty_like(expected_scales)
    kernel.encode_codes_(x, got_codes, got_scales, kind == "signed", stream, shift)
    assert torch.equal(got_scales, expected_scales)
    nan_code = expected_codes == (0x7F if kind == "signed" else 0xFF)
    assert torch.equal(got_codes[~nan_code], expected_codes[~nan_code])
    assert torch.equal(got_codes[nan_code] & 0x7F, expected_codes[nan_code] & 0x7F)
    decoded = torch.empty(x.shape)
    kernel.decode_codes_(expected_codes, expected_scales, decoded, kind == "signed")
    assert _same(decoded, codes.decode(expected_codes, expected_scales, MAPS[kind]))


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_the_kernel_rounds_to_bfloat16_as_the_definition(mode, fused_kernel):
    from rectified.engines.fused import kernel

    assert kernel.load_formats()
    x = _awkward()
    stream = rounding.stream_key(0, 4, 1)
    h = rounding.element_bits(stream, x.numel())
    random16 = (h & 0xFFFF, h >> 16, rounding.parameter_bits(h), None)[mode]
    expected = x.bfloat16() if random16 is None else rounding.to_bfloat16_stochastic(x, random16)
    got = torch.empty_like(expected)
    kernel.round_bfloat16_(x, got, stream, mode)
    assert _same(got.float(), expected.float())


@pytest.fixture(params=[False, True], ids=["denormals", "flush-denormal"])
def flush_denormal(request):
    """Both floating-point modes: torch.set_flush_denormal(True) reads float32 subnormals as 0,
    which no decoding may depend on (every code's value is a normal float32)."""
    if request.param and not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    yield request.param
    torch.set_flush_denormal(False)


@pytest.mark.parametrize("kind", list(MAPS))
def test_the_kernel_decodes_every_code_as_the_definition(kind, flush_denormal, fused_kernel):
    """All 256 codes (subnormal, normal, NaN, both signs) under scales of 1, a power of two
    and an odd number, one block each, against the definition computed with denormals on."""
    from rectified.engines.fused import kernel

    assert kernel.load_formats()
    every = torch.arange(256, dtype=torch.uint8).repeat(3)
    scales = torch.tensor([1.0, 2.0**-40, 3.7e5])
    decoded = torch.empty(every.shape)
    kernel.decode_codes_(every, scales, decoded, kind == "signed")
    torch.set_flush_denormal(False)
    assert _same(decoded, codes.decode(every, scales, MAPS[kind]))

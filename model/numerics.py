"""How far two float32 computations of the same maths may differ: rounding, scaled to the values compared.

Two correct implementations that add in another order (another kernel, MKL's AVX-512 path versus AVX2, a fused
versus an unfused attention) differ by a few float32 roundings of the magnitudes involved, never by a fixed
absolute amount: 1e-5 is 80 roundings of a value near 1 but one rounding of a value near 100. A tolerance is
therefore a number of roundings (`ulps`) of the reference's largest magnitude (at least 1, so that values near 0
are judged on the scale of the computation, not their own); a wrong weight, eps or formula misses by far more.
"""
from __future__ import annotations

import torch

FLOAT32_EPS = torch.finfo(torch.float32).eps


def float32_tolerance(reference: torch.Tensor, ulps: float) -> float:
    """`ulps` float32 roundings of the reference's largest magnitude (>= 1)."""
    return ulps * FLOAT32_EPS * max(float(torch.as_tensor(reference).abs().max()), 1.0)


def assert_float32_close(actual: torch.Tensor, reference: torch.Tensor, ulps: float, what: str = "values") -> None:
    """Same shape, and max |actual - reference| within `ulps` roundings of the reference's scale."""
    actual, reference = torch.as_tensor(actual).detach(), torch.as_tensor(reference).detach()
    assert actual.shape == reference.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(reference.shape)}"
    diff = float((actual.double() - reference.double()).abs().max()) if reference.numel() else 0.0
    tol = float32_tolerance(reference, ulps)
    assert diff <= tol, f"{what}: max |diff| {diff:.3e} > {tol:.3e} ({ulps} float32 roundings of the reference scale)"

"""Seeds derived from (seed, step, index, purpose, ...), the same in every process.

webdataset's `make_seed` mixes `hash()` of its arguments, and Python salts string hashes per process
(PYTHONHASHSEED): a purpose string like "noise" would give each rank, and each resumed run, different draws.
"""
from __future__ import annotations

import hashlib

import torch


def stable_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends only on `parts` (ints and strings), never on the process."""
    digest = hashlib.blake2b(repr(tuple(parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def sample_generator(seed: int, step: int, index: int, what: str) -> torch.Generator:
    """The generator of one per-sample draw (`what`: "t", "noise", "vae") of global sample `index` at `step`."""
    return torch.Generator().manual_seed(stable_seed(seed, step, index, what))

"""Stable sharding of identities: the same key lands in the same shard in every process, on every machine.

The hash is defined here, not borrowed (Python's `hash()` is salted per process, and pandas' hashing is an
implementation detail that may change between versions):

    h = 0
    for each byte b of the key's UTF-8 encoding:  h = (h * 0x100000001B3 + b + 1) mod 2**64
    then the splitmix64 finalizer:
    z = h + 0x9E3779B97F4A7C15;  z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9;  z = (z ^ z >> 27) * 0x94D049BB133111EB
    z = z ^ z >> 31                                     (all mod 2**64)
    shard = (z >> 32) mod shards

The polynomial is evaluated with numpy over all keys at once (each byte times a power of the multiplier, summed per
key); the finalizer spreads the bits, and the shard is taken from the high half, whose bits are the best mixed
(keys like "1", "2", … are then as even over the shards as a cryptographic hash makes them). Changing any of this
moves identities between shards, so tests pin known values.
"""

from __future__ import annotations

from typing import Final, overload

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = ["reference_hash", "reference_shard", "stable_shard"]

_MULTIPLIER: Final = 0x100000001B3
_MASK: Final = (1 << 64) - 1
_BATCH: Final = 1 << 18  # keys per numpy pass: bounds the temporary arrays


def _finalize(h: np.ndarray) -> np.ndarray:
    z = h + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _powers(count: int) -> np.ndarray:
    powers = np.full(max(count, 1), _MULTIPLIER, dtype=np.uint64)
    powers[0] = 1
    return np.cumprod(powers, dtype=np.uint64)  # wraps mod 2**64, which is the definition


def _hash_batch(keys: pa.LargeStringArray) -> np.ndarray:
    offsets = np.frombuffer(keys.buffers()[1], dtype=np.int64)[keys.offset : keys.offset + len(keys) + 1]
    start, stop = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(keys.buffers()[2], dtype=np.uint8)[start:stop] if stop > start else np.empty(0, np.uint8)
    offsets = offsets - start
    lengths = np.diff(offsets)
    hashes = np.zeros(len(keys), dtype=np.uint64)
    if data.size:
        # Byte i of a key of length n is multiplied by MULTIPLIER ** (n - 1 - i): Horner's rule, unrolled.
        key_of_byte = np.repeat(np.arange(len(keys)), lengths)
        from_end = offsets[1:][key_of_byte] - 1 - np.arange(data.size)
        terms = (data.astype(np.uint64) + np.uint64(1)) * _powers(int(lengths.max()))[from_end]
        nonempty = lengths > 0
        hashes[nonempty] = np.add.reduceat(terms, offsets[:-1][nonempty])
    return _finalize(hashes)


@overload
def stable_shard(key_norm: pd.Series, shards: int) -> pd.Series: ...
@overload
def stable_shard(key_norm: str, shards: int) -> int: ...
def stable_shard(key_norm: pd.Series | str, shards: int) -> pd.Series | int:
    """The shard (0 … shards-1, int64) of each key, stable across processes, machines and library versions.

    Takes a Series (vectorized; a missing key hashes as the empty string) or one key. Raises `ValueError` when
    `shards` < 1.
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    if isinstance(key_norm, str):
        return reference_shard(key_norm, shards)
    keys = pa.array(key_norm.astype("string[pyarrow]").array).cast(pa.large_string()).fill_null("")
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    hashes = np.empty(len(keys), dtype=np.uint64)
    for first in range(0, len(keys), _BATCH):
        hashes[first : first + _BATCH] = _hash_batch(keys.slice(first, _BATCH))
    shard = (hashes >> np.uint64(32)) % np.uint64(shards)
    return pd.Series(shard.astype(np.int64), index=key_norm.index, name="shard")


def reference_shard(key: str, shards: int) -> int:
    """The same shard computed in plain Python: the specification `stable_shard` is tested against."""
    return (reference_hash(key) >> 32) % shards


def reference_hash(key: str) -> int:
    """The 64-bit hash of a key, in plain Python (see the module docstring)."""
    h = 0
    for byte in key.encode("utf-8"):
        h = (h * _MULTIPLIER + byte + 1) & _MASK
    z = (h + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)

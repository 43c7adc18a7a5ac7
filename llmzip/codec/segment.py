"""Splitting input: text vs binary routing, and token segments for the lockstep engine."""

from __future__ import annotations

import numpy as np

BLOCK = 4096                 # classification granularity in bytes
MIN_TEXT_RUN = 2 * BLOCK     # shorter text runs between binary ones are treated as binary

_CONTROL = np.zeros(256, dtype=bool)
_CONTROL[[b for b in range(32) if b not in (9, 10, 11, 12, 13, 27)]] = True
_CONTROL[127] = True


def is_text_block(block: bytes) -> bool:
    """True when the block looks like text: valid UTF-8 almost everywhere, few controls."""
    if not block:
        return True
    text = block.decode("utf-8", errors="surrogateescape")
    invalid = sum(1 for ch in text if "\udc80" <= ch <= "\udcff")
    # a block may cut a multi-byte character at either end: allow a few invalid bytes
    if invalid > 6 + len(block) // 200:
        return False
    controls = int(_CONTROL[np.frombuffer(block, dtype=np.uint8)].sum())
    return controls <= len(block) // 100


def split_text_binary(data: bytes) -> list[tuple[int, int, bool]]:
    """Runs (start, end, is_text) covering data, in order."""
    if not data:
        return []
    kinds = [is_text_block(data[i:i + BLOCK]) for i in range(0, len(data), BLOCK)]
    runs: list[list] = []
    for i, k in enumerate(kinds):
        start, end = i * BLOCK, min((i + 1) * BLOCK, len(data))
        if runs and runs[-1][2] == k:
            runs[-1][1] = end
        else:
            runs.append([start, end, k])
    # short text islands inside binary are not worth a model chunk
    if len(runs) > 1:
        for r in runs:
            if r[2] and r[1] - r[0] < MIN_TEXT_RUN:
                r[2] = False
        merged: list[list] = []
        for r in runs:
            if merged and merged[-1][2] == r[2]:
                merged[-1][1] = r[1]
            else:
                merged.append(r)
        runs = merged
    return [tuple(r) for r in runs]


def balanced(total: int, n_seg: int) -> list[int]:
    """`total` tokens in `n_seg` segments of equal length (+-1), longer ones first."""
    q, r = divmod(total, n_seg)
    return [q + 1] * r + [q] * (n_seg - r)


def plan_segments(n_tokens: int, seg_len: int, batch: int) -> list[list[int]]:
    """Cut n_tokens into chunks of at most `batch` segments of at most `seg_len` tokens.

    As few segments as seg_len allows, all of equal length (+-1), spread evenly over as
    few chunks as batch allows: lockstep wastes no steps, and no chunk is left with a
    handful of segments that would step as slowly as a full one.
    """
    if n_tokens <= 0:
        return []
    n_seg = -(-n_tokens // seg_len)
    lengths = balanced(n_tokens, n_seg)
    chunks, i = [], 0
    for k in balanced(n_seg, -(-n_seg // batch)):
        chunks.append(lengths[i:i + k])
        i += k
    return chunks

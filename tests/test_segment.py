"""segment.plan_segments: how compress cuts token streams for the lockstep engine."""

import random

import pytest

from llmzip.codec.segment import balanced, plan_segments


@pytest.mark.parametrize("seed", range(5))
def test_plan_segments_covers_every_token_within_limits(seed):
    rng = random.Random(seed)
    for _ in range(400):
        n, L, B = rng.randint(1, 10**6), rng.randint(1, 4096), rng.randint(1, 128)
        plan = plan_segments(n, L, B)
        assert sum(map(sum, plan)) == n
        assert all(1 <= len(c) <= B and 1 <= min(c) and max(c) <= L for c in plan)
        assert len(plan) == -(-(-(-n // L)) // B)        # as few chunks as batch allows


def test_plan_segments_spreads_segments_over_chunks():
    # 71 segments of ~507 tokens with batch 64: two chunks of 36 and 35, not 64 and 7
    plan = plan_segments(36000, 512, 64)
    assert [len(c) for c in plan] == [36, 35]
    assert max(map(max, plan)) - min(map(min, plan)) <= 1


def test_plan_segments_empty_and_balanced():
    assert plan_segments(0, 2048, 64) == []
    assert balanced(10, 3) == [4, 3, 3]

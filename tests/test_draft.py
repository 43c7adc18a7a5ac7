"""The decoder's guessed steps (codec/draft.py; ExactEngine.lockstep's `draft`): a forward
pass over the last decoded token and the guesses gives the tables single steps give, so
`choose` sees exactly the same calls, right guesses or wrong, on every kernel path, across
a window's slides and the ends of segments, and fewer forward passes serve the steps."""

from __future__ import annotations

import numpy as np
import pytest

import llmzip
from llmzip.codec import lockstep
from llmzip.codec.draft import PRIOR, Drafter
from llmzip.engine.exact import ExactEngine, ExactProfile, kernels
from conftest import corpus_bytes

PATHS = ["reference"] + (kernels.supported_paths() if kernels.available() else [])
PROFILES = {"whole": ExactProfile(), "rebuild": ExactProfile(window=32, stride=8),
            "shift": ExactProfile(window=40, stride=5, slide="shift")}


@pytest.fixture(scope="module", params=["llama", "gemma"])
def model(request, tiny_model, tiny_gemma):
    return tiny_model if request.param == "llama" else tiny_gemma


def _segments(model, lengths=(90, 85, 60)):
    """Random tokens with repeats (so that an n-gram drafter guesses)."""
    rng = np.random.default_rng(1)
    base = rng.integers(0, model.config.vocab_size, 20)
    return [np.concatenate([base, rng.integers(0, 50, n)])[:n] if i % 2 else
            np.tile(base, n // 20 + 1)[:n] for i, n in enumerate(lengths)]


class Oracle:
    """Guesses the true next tokens, as many as allowed: all right, or with wrong_every
    one of the first wrong_every guesses wrong (a different one from step to step)."""

    def __init__(self, segs, n=5, wrong_every=0):
        self.segs, self.n, self.wrong_every, self.t = segs, n, wrong_every, 0
        self.limits, self.right = [], 0

    def propose(self, live, limit):
        self.limits.append(limit)
        k = min(self.n, limit)
        g = np.array([[self.segs[i][self.t + j] for j in range(k)] for i in live],
                     dtype=np.int64).reshape(len(live), k)
        if self.wrong_every and k:              # a wrong guess somewhere
            j = self.t % min(k, self.wrong_every)
            g[0, j] = (g[0, j] + 1) % 97
        return g

    def passed(self, right, seconds):
        self.right += right


def _steps(engine, segs, out="freqs", draft=None):
    got = []

    def choose(t, live, f):
        got.append((t, live.copy(), f.copy()))
        y = np.array([segs[i][t] for i in live])
        if isinstance(draft, Drafter):
            for i, s in zip(live, y):
                draft.observe(int(i), int(s))
        elif draft is not None:
            draft.t = t + 1
        return y

    engine.lockstep([len(s) for s in segs], choose, out=out, draft=draft)
    return got


def _same(a, b):
    return len(a) == len(b) and all(
        x[0] == y[0] and np.array_equal(x[1], y[1]) and np.array_equal(x[2], y[2])
        for x, y in zip(a, b))


@pytest.mark.parametrize("kernel", PATHS)
@pytest.mark.parametrize("prof", list(PROFILES), ids=list(PROFILES))
def test_guessed_steps_give_the_same_tables(model, kernel, prof):
    """All guesses right, one wrong in every few, or the n-gram drafter: the same
    (t, live, tables) calls as one step at a time, for tables and for logits."""
    segs = _segments(model)
    e = ExactEngine(model, PROFILES[prof], kernel=kernel, threads=2)
    want = _steps(e, segs)
    passes = e.decoded["passes"]
    assert passes == e.decoded["steps"] == len(want)
    for n, wrong in ((5, 0), (4, 3), (1, 1)):
        o = Oracle(segs, n, wrong)
        assert _same(_steps(e, segs, draft=o), want), (n, wrong)
        assert o.limits and min(o.limits) >= 0
        if not wrong:       # every guess right: the passes that guessed served 1 + k steps
            assert e.decoded["passes"] - passes < len(want) / 2
        passes = e.decoded["passes"]
    rep = [np.tile(s[:20], 5)[:len(s)] for s in segs]       # every segment repeats
    d, want = Drafter(len(rep)), _steps(e, rep)
    passes = e.decoded["passes"]
    assert _same(_steps(e, rep, draft=d), want)
    assert e.decoded["passes"] - passes < len(want)        # some guesses were right
    if kernel == "reference":
        return
    o = Oracle(segs, 5, 2)
    assert _same(_steps(e, segs, "logits", draft=o), _steps(e, segs, "logits"))


def test_guesses_never_cross_a_window_or_a_segment_end(tiny_model):
    """The limit handed to the drafter keeps the guessed positions inside the window
    being coded and inside every live segment: an oracle that takes all it may still
    gets every call right (the limits: 23 in the first window, 2 where the segment of 33
    tokens ends 3 tokens into a window)."""
    segs = _segments(tiny_model, (70, 45, 33))
    e = ExactEngine(tiny_model, ExactProfile(window=24, stride=6, slide="shift"), threads=1)
    o = Oracle(segs, 100)
    assert _same(_steps(e, segs, draft=o), _steps(e, segs))
    assert max(o.limits) == 24 - 1 and 2 in o.limits      # window 0; a segment of 33


def test_drafter_guesses_repeats_and_stays_quiet_on_noise():
    d = Drafter(2)
    phrase = [5, 9, 2, 7, 3, 8, 1]
    for _ in range(4):
        for y in phrase:
            d.observe(0, y)
    assert d.propose(np.array([0]), 10).shape == (1, 0)    # no pass timed yet
    d.passed(0, 0.010)                                     # one position: 10 ms
    g = d.propose(np.array([0]), 10)
    assert g.shape[0] == 1 and g.shape[1] >= 3
    assert list(g[0]) == (phrase * 2)[:g.shape[1]]
    assert d.propose(np.array([0]), 2).shape == (1, 2)            # the limit holds
    assert d.propose(np.array([0]), 0).shape == (1, 0)
    rng = np.random.default_rng(0)
    for y in rng.integers(1000, 100000, 500):                     # nothing repeats
        d.observe(1, int(y))
    d.passed(0, 0.012)
    assert d.propose(np.array([1]), 5).shape == (1, 0)
    d.passed(0, 0.011)
    assert d.propose(np.array([0, 1]), 5).shape == (2, 0)        # two: not yet timed
    d.passed(0, 0.015)
    k = d.propose(np.array([0, 0]), 5).shape[1]
    assert k >= 2                                                # both repeat
    d.passed(2, 0.020)
    assert d.propose(np.array([0, 1]), 5).shape == (2, 0)        # all segments or none
    prior = PRIOR * len(d.tried)                  # the guesses timed were counted
    assert d.tried.sum() == prior + k and abs(d.right.sum() - prior / 2 - 2) < 1e-9


def test_drafter_guesses_as_far_as_the_timed_costs_pay():
    """The number of guesses follows the passes' timed costs: where further positions
    cost little it guesses far, where they cost much only the likeliest."""
    d = Drafter(1)
    for y in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] * 3 + [1, 2, 3, 4, 5, 6, 11, 12, 13, 14]:
        d.observe(0, y)
    for y in (1, 2):
        d.observe(0, y)
    assert d.propose(np.array([0]), 7).shape == (1, 0)
    d.passed(0, 0.010)                        # one position 10 ms, further ones ~COST each
    far = d.propose(np.array([0]), 7).shape[1]
    assert far >= 4
    d.cost.update({(1, k): 0.010 + 0.010 * k for k in range(1, 8)})  # each as dear as one
    near = d.propose(np.array([0]), 7).shape[1]
    assert near < far
    d.cost.update({(1, k): 0.010 + 0.001 * k for k in range(1, 8)})  # cheap again
    assert d.propose(np.array([0]), 7).shape[1] >= far
    d.passed(0, 0.050)                        # the timed cost of that pass moves
    assert d.cost[(1, d._shape[1])] > 0.010 + 0.001 * d._shape[1]


def test_drafter_calibrates_its_chances():
    """Guesses that keep being wrong stop being made, whatever the counts estimate."""
    d = Drafter(1)
    for y in [1, 2, 3, 4] * 6:
        d.observe(0, y)
    d.propose(np.array([0]), 3)
    d.passed(0, 0.010)
    assert d.propose(np.array([0]), 3).shape[1] > 0
    for _ in range(200):
        g = d.propose(np.array([0]), 3)
        d.passed(0, 0.010 + 0.001 * g.shape[1])     # never right
    assert d.propose(np.array([0]), 3).shape[1] == 0
    assert d.right.sum() / d.tried.sum() < 0.2


def test_drafter_switches_to_the_new_successor():
    d = Drafter(1)
    for y in [1, 2, 3] * 3 + [1, 2, 4] * 6:
        d.observe(0, y)
    for y in (1, 2):
        d.observe(0, y)
    d.propose(np.array([0]), 1)
    d.passed(0, 0.01)
    assert d.propose(np.array([0]), 1)[0, 0] == 4


def test_round_trip_with_and_without_guesses(tiny_model, monkeypatch):
    """An archive with adaptive models and a shifted window decodes to the same bytes
    with guesses and without; with guesses fewer forward passes serve the steps."""
    data = corpus_bytes("alice29.txt", 1500) * 3
    blob = llmzip.compress(data, model=tiny_model, window=96, stride=32, seg_len=1200,
                           batch=1, adapt={"bias": 20000, "match": 20000, "ngram": 6000},
                           fallback=False)
    d = llmzip.Decompressor(tiny_model)
    assert d.decompress(blob) == data
    on = dict(d.engine.decoded)
    monkeypatch.setattr(lockstep, "SPECULATE", False)
    d2 = llmzip.Decompressor(tiny_model)
    assert d2.decompress(blob) == data
    assert d2.engine.decoded["passes"] == d2.engine.decoded["steps"] == on["steps"]
    assert on["passes"] < 0.9 * on["steps"], on

"""Sliding windows, adaptive models and levels (issue 15): exact, deterministic, useful.

The engine's sliding window must give each token the table its definition says (that of
a fresh window holding the kept context), the same from the encoder's prefill and the
decoder's steps, on every kernel path; the adaptive models must make the same tables on
both sides (round trips, archives identical whatever the kernel or thread count) and
must actually help on text they can learn.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import llmzip
from llmzip.codec import container as ct
from llmzip.codec.adapt import (NGRAM_ORDERS, AdaptConfig, Adapter, MatchModel, NgramModel,
                                tau_gradient, temper_gradient)
from llmzip.codec.levels import DEFAULT_LEVEL, LEVELS, level_settings
from llmzip.engine.exact import ExactEngine, ExactProfile
from llmzip.errors import FormatError, UsageError
from conftest import corpus_bytes

KERNELS = ["reference", "portable", "auto"]
TEXT = corpus_bytes("alice29.txt", 5000)


@pytest.fixture(scope="module", params=["llama", "gemma"])
def model(request, tiny_model, tiny_gemma):
    return tiny_model if request.param == "llama" else tiny_gemma


def _segments(model, lengths=(90, 85, 60)):
    rng = np.random.default_rng(0)
    return [rng.integers(0, model.config.vocab_size, n) for n in lengths]


def _prefill(engine, segs, out="freqs"):
    return [(t, live.copy(), f.copy()) for t, live, f in engine.encode_steps(segs, out=out)]


def _steps(engine, segs, out="freqs"):
    got = []

    def choose(t, live, f):
        got.append((t, live.copy(), f.copy()))
        return np.array([segs[i][t] for i in live])

    engine.lockstep([len(s) for s in segs], choose, out=out)
    return got


def _same(a, b):
    return len(a) == len(b) and all(
        x[0] == y[0] and np.array_equal(x[1], y[1]) and np.array_equal(x[2], y[2])
        for x, y in zip(a, b))


SLIDE = ExactProfile(window=32, stride=8)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("prof", [SLIDE] + [ExactProfile(window=w, stride=s, slide="shift")
                                            for w, s in ((32, 8), (48, 16), (40, 5))],
                         ids=["rebuild", "shift-8", "shift-16", "shift-5"])
def test_sliding_window_prefill_equals_steps_and_reference(model, kernel, prof):
    """The encoder's prefill, the decoder's steps and the reference agree on every path,
    for a window rebuilt from BOS and one whose kept keys and values shift (BOS rotated
    again), whether the stride moves whole key tiles (16) or not."""
    segs = _segments(model)
    want = _prefill(ExactEngine(model, prof, kernel="reference"), segs)
    e = ExactEngine(model, prof, kernel=kernel, threads=2)
    assert _same(_prefill(e, segs), want)
    assert _same(_steps(e, segs), want)
    assert _same(_steps(e, segs, "logits"), _prefill(e, segs, "logits"))


def test_rope_tables_from_any_position(model):
    """A shifted window reads RoPE tables from its offset on: views into tables that
    double as needed, with the values of tables computed for exactly that size."""
    from llmzip.engine.exact.reference import RopeTables, rope_tabs
    t = RopeTables(model_int(model))
    small = t.get(16, at=0)
    big = t.get(100, at=3000)                  # grows (to 4,096 positions)
    want = rope_tabs(model_int(model), 3100)
    for k, (c, s) in big.items():
        assert c.shape[0] >= 100 and torch.equal(c[:100], want[k][0][3000:3100])
        assert torch.equal(s[:100], want[k][1][3000:3100])
        assert torch.equal(small[k][0][:16], want[k][0][:16])


def model_int(model):
    from llmzip.engine.exact.engine import int_model
    return int_model(model)


def test_shifted_window_keeps_what_it_saw(model):
    """The first window is the segment's own; after it the kept tokens carry the context
    they were computed with, so tables differ from a window rebuilt from BOS; and a
    shifted window that never has to slide (window > segment) is no window at all."""
    segs = _segments(model, (90,))
    shift = ExactEngine(model, ExactProfile(window=32, stride=8, slide="shift"), threads=1)
    rebuilt = ExactEngine(model, SLIDE, threads=1)
    a, b = _prefill(shift, segs), _prefill(rebuilt, segs)
    assert _same(a[:32], b[:32])
    assert not any(np.array_equal(x[2], y[2]) for x, y in zip(a[32:], b[32:]))
    whole = _prefill(ExactEngine(model, ExactProfile(window=96, stride=8, slide="shift"),
                                 threads=1), segs)
    assert _same(whole, _prefill(ExactEngine(model, threads=1), segs))


def test_sliding_window_is_its_definition(model):
    """Token t of window (first, end, start) gets the table a fresh segment s[start:]
    gives its token t - start: the kept context, after a BOS, and nothing else."""
    segs = _segments(model, (90,))
    e = ExactEngine(model, SLIDE, threads=1)
    plain = ExactEngine(model, threads=1)
    got = {t: f[0] for t, _, f in _prefill(e, segs)}
    wins = e.windows(90)
    assert wins[0] == (0, 32, 0) and wins[1] == (32, 40, 8) and wins[-1] == (88, 90, 64)
    for first, end, start in wins:
        fresh = {t: f[0] for t, _, f in _prefill(plain, [segs[0][start:end]])}
        for t in range(first, end):
            assert np.array_equal(got[t], fresh[t - start]), t


@pytest.mark.parametrize("kernel", KERNELS)
def test_tables_from_logits_equal_the_fused_tables(model, kernel):
    """logits -> table (+ a bias of zero, or none) is exactly the engine's own table."""
    segs = _segments(model, (40, 33))
    e = ExactEngine(model, kernel=kernel, threads=2)
    tables = _prefill(e, segs)
    logits = _prefill(e, segs, "logits")
    zero = torch.zeros(model.config.vocab_size, dtype=torch.int32)
    for (_, _, f), (_, _, lg) in zip(tables, logits):
        assert np.array_equal(e.kernel.table(torch.from_numpy(lg), None, 24).numpy(), f)
        assert np.array_equal(e.kernel.table(torch.from_numpy(lg), zero, 24).numpy(), f)


@pytest.mark.parametrize("kernel", ["portable", "auto"])
def test_biased_tables_equal_the_reference(model, kernel):
    segs = _segments(model, (30,))
    ref = ExactEngine(model, kernel="reference")
    fast = ExactEngine(model, kernel=kernel)
    lg = torch.from_numpy(np.concatenate([f for _, _, f in _prefill(ref, segs, "logits")]))
    rng = np.random.default_rng(1)
    for bias in (torch.from_numpy(rng.integers(-40000, 40000, lg.shape[1], dtype=np.int32)),
                 torch.from_numpy(rng.integers(-2**31, 2**31 - 1, lg.shape, dtype=np.int32))):
        want = ref.kernel.table(lg, bias, 20)
        assert torch.equal(fast.kernel.table(lg, bias, 20, threads=2), want)
        assert (want.sum(-1) == 1 << 20).all() and (want >= 1).all()


ALL = {"bias": 20000, "tau": 2000000, "match": 20000, "ngram": 6000}


@pytest.mark.parametrize("adapt", [{"bias": 20000}, {"tau": 2000000}, {"temper": 2000000},
                                   {"match": 20000},
                                   {"ngram": 6000}, ALL])
def test_adaptive_round_trip(tiny_model, adapt):
    blob = llmzip.compress(TEXT, model=tiny_model, adapt=adapt, fallback=False, batch=3,
                           seg_len=300)
    info = ct.scan(blob)
    assert info.version == 9
    assert info.header["engine"]["adapt"] == adapt
    assert llmzip.decompress(blob, model=tiny_model) == TEXT


def test_adaptive_models_learn(tiny_model):
    """On text the tiny random model cannot predict, the adaptive bias learns the
    file's own token frequencies and the match model its repeats: smaller archives."""
    data = TEXT[:2500] * 2
    size = {}
    for name, adapt in (("none", {}), ("bias", {"bias": 20000}), ("all", ALL)):
        size[name] = len(llmzip.compress(data, model=tiny_model, adapt=adapt, level=1,
                                         fallback=False, batch=4, seg_len=500))
    assert size["bias"] < 0.9 * size["none"]
    assert size["all"] < size["bias"]


@pytest.fixture(scope="module")
def slide_archives(tiny_model):
    kw = dict(model=tiny_model, window=64, stride=16, seg_len=400, adapt=ALL,
              fallback=False, batch=3)
    return {k: llmzip.compress(TEXT, kernel=k, threads=t, **kw)
            for k, t in (("auto", 2), ("portable", 1), ("reference", 1))}


def test_window_and_adaptation_archives_identical_whatever_the_kernel(slide_archives):
    assert len(set(slide_archives.values())) == 1


def test_slide_is_recorded_and_versioned(tiny_model, slide_archives):
    """The default slide shifts (engine.slide "shift"); --slide rebuild writes llmzip
    0.3.0's tables, which still decode; a window that never slides records neither. Every
    archive with a model chunk is format 9 (llmzip 0.10's header dictionary)."""
    info = ct.scan(slide_archives["auto"])
    assert info.version == 9 and info.header["engine"]["slide"] == "shift"
    no_ngram = {k: v for k, v in ALL.items() if k != "ngram"}   # n-grams need format 8
    kw = dict(model=tiny_model, window=64, stride=16, adapt=no_ngram, fallback=False, batch=3)
    old = llmzip.compress(TEXT, seg_len=400, slide="rebuild", **kw)
    info = ct.scan(old)
    assert info.version == 9 and "slide" not in info.header["engine"]
    assert llmzip.decompress(old, model=tiny_model) == TEXT
    assert old != llmzip.compress(TEXT, seg_len=400, **kw)
    short = ct.scan(llmzip.compress(TEXT, seg_len=60, **kw))
    assert short.version == 9 and "slide" not in short.header["engine"]
    with pytest.raises(UsageError):
        llmzip.Compressor(tiny_model, slide="sideways")


@pytest.mark.parametrize("kernel", ["auto", "portable"])
def test_window_and_adaptation_decode_with_every_path(tiny_model, slide_archives, kernel):
    blob = slide_archives["auto"]
    assert ct.scan(blob).header["engine"]["window"] == 64
    for threads in (1, 3):
        assert llmzip.decompress(blob, model=tiny_model, kernel=kernel, threads=threads) == TEXT


def _forged(blob, **engine):
    info = ct.scan(blob)
    header = dict(info.header, engine=dict(info.header["engine"], **engine))
    rec = info.chunks[0].offset - ct._CHUNK.size - 4
    return ct.header_bytes(header, info.version) + blob[rec:]


@pytest.mark.parametrize("bad", [dict(adapt={"bogus": 1}), dict(adapt={"bias": -1}),
                                 dict(adapt={"bias": 1.5}), dict(window=64, stride=64),
                                 dict(window=100000, stride=16), dict(window="64"),
                                 dict(adapt=[1]), dict(slide="sideways"), dict(slide=1),
                                 dict(slide="shift", window=0, stride=0)])
def test_bad_adaptive_headers_refused(tiny_model, slide_archives, bad):
    with pytest.raises(FormatError):
        llmzip.decompress(_forged(slide_archives["auto"], **bad), model=tiny_model)


def test_adapt_config_parsing():
    assert AdaptConfig.parse("bias=5,match=7").to_dict() == {"bias": 5, "match": 7}
    assert not AdaptConfig.parse("off").active
    for text in ("bias", "bias=x", "nope=3", "bias=-2"):
        with pytest.raises(UsageError):
            AdaptConfig.parse(text)


def test_match_model_predicts_repeats_across_segments():
    m = MatchModel(2)
    seq = [5, 6, 7, 8, 9, 10, 11]
    for y in seq:
        m.update(0, y)
    for y in seq[:5]:                     # segment 1 repeats segment 0's start
        m.update(1, y)
    assert m.predict(1) == (10, 5)        # the token after 5..9, a match of 5 tokens
    m.update(1, 10)
    assert m.predict(1) == (11, 6)
    m.update(1, 99)                       # a miss ends the match
    assert m.predict(1) is None


def test_ngram_model_counts_contexts_across_segments():
    m = NgramModel(2)
    for y in [5, 6, 7, 5, 6, 8]:
        m.update(0, y)
    for y in [5, 6]:
        m.update(1, y)
    got = {NGRAM_ORDERS[i]: (nb, vs.tolist(), sh.tolist()) for i, nb, vs, sh in m.features(1)}
    # order 1: "6" was followed by 7 and 8 (N = 2, each a third of N + 1: 8 * 1 // 3 = 2)
    assert got[1] == (1, [7, 8], [2, 2])
    assert got[2][1] == [7, 8]            # "5 6" -> 7, 8
    assert 3 not in got                   # segment 1 has only two tokens
    m.update(1, 7)
    assert m.counts[1][(5, 6)] == [3, {7: 2, 8: 1}]


def test_adapter_state_is_integer_and_bounded(tiny_model):
    e = ExactEngine(tiny_model)
    V = tiny_model.config.vocab_size
    ad = Adapter(AdaptConfig(**ALL), 1, V, 24, e.kernel.table)
    rng = np.random.default_rng(0)
    for _ in range(300):                  # a token the model never expects, again and again
        lg = rng.integers(-2**30, 2**30, (1, V), dtype=np.int32)
        lg[0, 3] = -2**30
        f = ad.tables(np.array([0]), lg)
        assert f.sum() == 1 << 24 and f.min() >= 1
        ad.update(np.array([3]))
    assert ad.b.dtype == np.int64 and int(np.abs(ad.b).max()) <= 64 << 40
    assert isinstance(ad.tau, int) and 1 << 30 <= ad.tau <= 1 << 34
    assert ad.ngram.w.dtype == np.int64 and int(np.abs(ad.ngram.w).max()) <= 32 << 40


def test_adapt_ops_c_equals_numpy(tiny_model, monkeypatch):
    """adapt_ops.c's passes over the vocabulary (the temperature, its expectation, the
    bias step) give numpy's integers: on extreme values, repeated tokens and a clamped bias,
    and through an Adapter's whole run (tables and state after every step)."""
    from llmzip.codec import adapt
    from llmzip.engine.exact import kernels
    if not kernels.available():
        pytest.skip("no C compiler: numpy is the only path")
    rng = np.random.default_rng(3)
    M, V, P = 3, 5000, 24
    lg = rng.integers(-2**30, 2**30, (M, V), dtype=np.int32)
    lg[1, :] = -2**30                                       # a row all at the floor
    f = rng.integers(1, 7000, (M, V), dtype=np.int32)
    f[:, 7] += (1 << P) - f.sum(axis=1, dtype=np.int64).astype(np.int32)   # totals 2^24
    sym = np.array([7, 7, 4999])
    b = rng.integers(-(64 << 40), 64 << 40, V, dtype=np.int64)
    b[:10] = 64 << 40                                       # at the clamp
    got = {}
    for use_c in (False, True):
        monkeypatch.setattr(adapt, "USE_C", use_c)
        assert (adapt._ops() is None) != use_c
        top, el = adapt._centred(lg, f, 1)
        top0, el0 = adapt._centred(lg, f, 0)
        bb, b32 = b.copy(), np.zeros(V, dtype=np.int32)
        adapt.bias_step(bb, b32, f, sym, P, 14000)
        got[use_c] = (top, el, el0, bb, b32, adapt.tau_gradient(lg, f, sym, P),
                      adapt.temper_gradient(lg, f, sym, P),
                      *(adapt.temper(lg, t) for t in (1 << 14, 65536, 77777, 1 << 18)))
    for x, y in zip(got[False], got[True]):
        assert np.array_equal(x, y)
    assert np.array_equal(got[True][4], got[True][3] >> adapt.STATE_FRAC)
    e = ExactEngine(tiny_model)
    V = tiny_model.config.vocab_size
    levels = range(min(kernels.library().llmzip_ex_max_level(), 2) + 1)
    legacy = {**ALL, "temper": ALL["tau"], "tau": 0}
    for cfg in (ALL, legacy, {"match": 20000}, {"ngram": 6000, "bias": 20000}):
        runs = {}
        for use_c, level in [(False, 0)] + [(True, lv) for lv in levels]:
            monkeypatch.setattr(adapt, "USE_C", use_c)
            monkeypatch.setattr(adapt, "TABLE_LEVEL", level)
            ad = Adapter(AdaptConfig(**cfg), 2, V, 24, e.kernel.table)
            r = np.random.default_rng(4)
            out = []
            for _ in range(40):
                f = ad.tables(np.array([0, 1]),
                              r.integers(-2**20, 2**20, (2, V), dtype=np.int32))
                ad.update(r.integers(0, 5, 2))
                out.append(f.copy())
            runs[use_c, level] = (np.stack(out), None if ad.b is None else ad.b.copy(),
                                  ad.tau, ad.w.copy())
        want = runs[False, 0]
        for key, got in runs.items():
            assert np.array_equal(want[0], got[0]), (cfg, key)
            assert (want[1] is None and got[1] is None) or np.array_equal(want[1], got[1])
            assert want[2] == got[2] and np.array_equal(want[3], got[3]), (cfg, key)


def test_one_call_tables_equal_the_spec(monkeypatch):
    """llmzip_ad_table (the adaptive models' tables in one call) gives what the numpy
    passes and the reference's table give: tempered logits (or not), the match and n-gram
    models' edits, the bias, the table, and the expectation of the logits for the
    temperature's step (sub 1: tau's; 0: temper's), on every SIMD level this CPU runs,
    with the largest entry edited, tied, in the first or last place, and rows at the
    floor; bad arguments are refused."""
    from llmzip.codec import adapt
    from llmzip.engine.exact import kernels
    from llmzip.engine.exact.reference import freqs
    if not kernels.available():
        pytest.skip("no C compiler: numpy is the only path")
    lib = kernels.library()
    levels = range(min(lib.llmzip_ex_max_level(), 2) + 1)
    rng = np.random.default_rng(8)
    M, V, P = 3, 5003, 24
    lg = rng.integers(-2**30, 2**30, (M, V), dtype=np.int32)
    lg[0, [0, 4000]] = 2**30                                # tied at the top
    lg[1, :] = -2**30                                       # a row at the floor
    lg[2, V - 1] = 2**30 - 5
    b32 = rng.integers(-2**16, 2**16, V, dtype=np.int32)
    exp32 = adapt._exp32()

    def call(lg, tau, idx, val, bias, sub, level):
        f = np.empty_like(lg)
        top, el = np.empty(len(lg), dtype=np.int32), np.empty(len(lg), dtype=np.int64)
        idx, val = np.asarray(idx, dtype=np.int64), np.asarray(val, dtype=np.int32)
        rc = lib.llmzip_ad_table(len(lg), lg.shape[1], lg.ctypes.data, tau, idx.ctypes.data,
                                 val.ctypes.data, len(idx), 0 if bias is None else bias.ctypes.data,
                                 exp32.ctypes.data, P, sub, f.ctypes.data, top.ctypes.data,
                                 el.ctypes.data, level)
        return rc, f, top, el

    edit_sets = [[], [0], [4000, V - 1, V, 2 * V + 7, M * V - 1],
                 sorted(rng.choice(M * V, 300, replace=False))]
    for tau in (0, 1 << 14, 70001, (1 << 18) + 3):
        t = adapt._tempered(lg, tau)
        for idx in edit_sets:
            val = rng.integers(-2**30, 2**30 + 1, len(idx))
            if len(idx) > 2:
                val[1] = 2**30                                  # an edit at the top
            want_l = t.copy()
            want_l.reshape(-1)[idx] = val
            for bias in (None, b32):
                x = want_l if bias is None else np.clip(want_l + bias, -2**30, 2**30)
                want = freqs(torch.from_numpy(x), P).numpy()
                for sub in (0, 1):
                    top, el = adapt._centred(lg, want, sub)
                    for level in levels:
                        rc, f, gtop, gel = call(lg, tau, idx, val, bias, sub, level)
                        assert rc == 0
                        assert np.array_equal(f, want), (tau, len(idx), level)
                        assert np.array_equal(gtop, top) and np.array_equal(gel, el)
    assert call(lg, 0, [5, 3], [0, 0], None, 1, 0)[0] == -1      # edits out of order
    assert call(lg, 0, [M * V], [0], None, 1, 0)[0] == -1        # outside the rows
    assert call(lg, 1 << 19, [], [], None, 1, 0)[0] == -1        # tau out of range
    assert call(lg, 0, [], [], None, 2, 0)[0] == -1              # sub 0 or 1


def test_tau_gradient_is_the_code_length_derivative():
    """tau's step is minus the derivative of the code length through the part of the
    table that moves with tau (f_v - 1 = q_v (2^P - V)). 0.3-0.9's `temper` counted the
    floor of 1 in its expectation too; where the floor holds a large share (here
    V / 2^P = 1.5%, as with Gemma's 262,144 tokens at P = 24) it is biased towards
    sharper tables. Checked against the slope of the integer tables' code length, which
    their rounding blurs (23% off here; with f = 1 + q S in float the two agree to 1e-9)."""
    from llmzip.engine.exact.reference import freqs
    rng = np.random.default_rng(1)
    V, P, R = 4000, 18, 128
    S = (1 << P) - V
    logits = (rng.standard_normal((R, V)) * 6 * 1024).astype(np.int64)    # Q10 bits
    logits[:, :40] += 14 * 1024                                          # a few likely
    y = np.array([rng.choice(40) if r % 4 else rng.choice(V) for r in range(R)])

    def code_bits(tau):
        f = freqs(torch.from_numpy((logits * tau).round().astype(np.int64)), P).numpy()
        return float(-np.log2(f[np.arange(R), y] / (1 << P)).sum())

    f = freqs(torch.from_numpy(logits), P).numpy()
    taus = np.linspace(0.96, 1.04, 9)
    slope = np.polyfit(taus, [code_bits(t) for t in taus], 1)[0]
    new = -tau_gradient(logits, f, y, P) / (1024 * S)
    old = -temper_gradient(logits, f, y, P) / (1024 * (1 << P))
    assert abs(new - slope) < 0.3 * slope and old > 2 * slope
    with pytest.raises(UsageError):
        AdaptConfig.parse("tau=1,temper=1")


# ------------------------------------------------------------------ levels

def test_levels_table():
    assert DEFAULT_LEVEL == 6 and sorted(LEVELS) == list(range(1, 10))
    one = level_settings(1)
    assert (one["window"], one["adapt"], one["seg_len"]) == (0, {}, 2048)
    with pytest.raises(UsageError):
        level_settings(10)


def test_ablation_rows_are_settings_a_compressor_takes(tiny_model):
    """scripts/bench_levels.py's ablation (llmzip/tools/levelbench.py): every row makes a
    Compressor (windows scaled to the tiny model's context), and the last adds level 7's
    temperature to level 6's models."""
    from llmzip.tools import levelbench
    rows = levelbench.ablation_rows()
    ctx = tiny_model.config.context_length
    for name, st in rows:
        st = {k: v for k, v in st.items() if k != "decode"}
        if st.get("window"):
            st["window"], st["stride"] = ctx, st["stride"] * ctx // st["window"]
        llmzip.Compressor(tiny_model, **st)
    assert rows[-1][1]["adapt"] == {**LEVELS[6].adapt, "tau": LEVELS[7].adapt["tau"]}


def test_level_1_writes_the_archives_of_before(tiny_model):
    """Level 1 is llmzip 0.2's default: no window, no adaptation (its header as format 5's,
    in a version 9 archive)."""
    blob = llmzip.compress(TEXT, model=tiny_model, level=1, fallback=False)
    info = ct.scan(blob)
    assert info.version == 9
    assert not {"window", "stride", "adapt"} & set(info.header["engine"])


def test_default_level_fits_a_short_context(tiny_model):
    """The default level's 2,048-position window is fitted to the tiny model's 512."""
    c = llmzip.Compressor(tiny_model)
    ctx = tiny_model.config.context_length
    assert (c.profile.window, c.profile.stride) == (ctx, ctx // 4)
    assert c.profile.adapt == level_settings(DEFAULT_LEVEL)["adapt"]
    with pytest.raises(UsageError):
        llmzip.Compressor(tiny_model, window=ctx + 1, stride=8)
    with pytest.raises(UsageError):
        llmzip.Compressor(tiny_model, engine="float", adapt={"bias": 1})


def test_level_window_equal_to_the_context_is_kept(tiny_model, monkeypatch):
    """A level's window as long as the model's context (BOS included) fits as it is, with
    the level's stride (level 7's 8,192 on SmolLM2 once became 8,192 sliding by 2,048)."""
    from llmzip.codec import levels
    ctx = tiny_model.config.context_length
    monkeypatch.setitem(levels.LEVELS, 7, levels.Level(window=ctx, stride=32, seg_len=4096))
    c = llmzip.Compressor(tiny_model, level=7)
    assert (c.profile.window, c.profile.stride) == (ctx, 32)
    monkeypatch.setitem(levels.LEVELS, 7, levels.Level(window=4 * ctx, stride=32, seg_len=4096))
    c = llmzip.Compressor(tiny_model, level=7)      # too long: fitted, the stride kept
    assert (c.profile.window, c.profile.stride) == (ctx, 32)


def test_cli_levels_and_adapt(tiny_gguf, tmp_path):
    src = tmp_path / "a.txt"
    src.write_bytes(TEXT[:1500])
    run = lambda *a: subprocess.run([sys.executable, "-m", "llmzip", *a], capture_output=True,
                                    text=True)
    r = run("-1", "--model", tiny_gguf, "--no-fallback", "-q", "-o", str(tmp_path / "1.llmz"),
            str(src))
    assert r.returncode == 0, r.stderr
    assert ct.scan((tmp_path / "1.llmz").read_bytes()).version == 9
    r = run("--model", tiny_gguf, "--no-fallback", "--adapt", "bias=3000", "--window", "128",
            "--stride", "32", "--seg-len", "900", "-q", "-o", str(tmp_path / "a.llmz"), str(src))
    assert r.returncode == 0, r.stderr
    eng = ct.scan((tmp_path / "a.llmz").read_bytes()).header["engine"]
    assert (eng["window"], eng["stride"], eng["adapt"]) == (128, 32, {"bias": 3000})
    assert eng["slide"] == "shift"
    r = subprocess.run([sys.executable, "-m", "llmzip", "-d", "-c", "--model", tiny_gguf,
                        str(tmp_path / "a.llmz")], capture_output=True)
    assert r.returncode == 0 and r.stdout == TEXT[:1500]
    r = run("--model", tiny_gguf, "--adapt", "bias=oops", str(src))
    assert r.returncode == 1 and "--adapt" in r.stderr and "Traceback" not in r.stderr
    assert "-9" in run("--help").stdout


def test_probe_keeps_a_good_model_and_leaves_a_bad_one(tiny_model, tiny_gguf, monkeypatch,
                                                       tmp_path):
    """probe_default_model: below PROBE_BPB the model stays, unscored by the others;
    above it every installed model is scored on the sample and the best is chosen."""
    from llmzip.codec import api
    from llmzip.engine.models import catalog
    from llmzip.engine.models.registry import load_model
    from llmzip.engine.models.tiny import write_tiny_gguf
    other = load_model(write_tiny_gguf(str(tmp_path / "other.gguf"), seed=5))
    models = {"tiny": tiny_model, "other": other}
    monkeypatch.setattr(catalog, "list_models", lambda: [{"name": n, "status": "ok"}
                                                         for n in models])
    monkeypatch.setattr(api, "load_model", lambda name: models[name])
    name, scores = api.probe_default_model(TEXT, tiny_model)     # random weights: bad
    assert set(scores) == {tiny_model.name, "other"} and name == min(scores, key=scores.get)
    monkeypatch.setattr(api, "PROBE_BPB", 100.0)
    assert api.probe_default_model(TEXT, tiny_model) == (tiny_model.name, {})
    assert api.probe_default_model(b"\x00" * 5000, tiny_model) == (tiny_model.name, {})

"""The exact engine: its building blocks, its tables, and the promise that every path
(the torch reference, the portable C kernels, each SIMD path this CPU has), every thread
count, every batch composition and prefill vs steps give the same integer tables.

The real default model's version of these checks is tests/test_exact_default_model.py
(slow); here the tiny random models run through the same code in seconds.
"""

import hashlib
import math
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

import llmzip
from llmzip.codec import container as ct
from llmzip.engine.exact import ExactEngine, intops, kernels, tables
from llmzip.engine.exact import weights as W
from llmzip.errors import EngineMismatchError, FormatError, UsageError
from conftest import corpus_bytes

DATA = corpus_bytes("alice29.txt", 3000)
PATHS = kernels.supported_paths() if kernels.available() else []
KERNELS = ["reference"] + PATHS


# ------------------------------------------------------------------ building blocks

def test_tables_are_pinned():
    """The tables are part of the arithmetic: any change is a new arithmetic version."""
    h = hashlib.sha256()
    h.update(tables.exp2_table().tobytes())
    h.update(tables.activation_table("silu").tobytes())
    h.update(tables.activation_table("gelu").tobytes())
    for a in tables.rope_tables(64, 100000.0, 256) + tables.rope_tables(256, 1e6, 256, 8.0):
        h.update(a.tobytes())
    assert h.hexdigest()[:16] == "b095d65ddbe517f6"


def test_table_values():
    e = tables.exp2_table()
    assert e[0] == 1 << 30 and e[512] == round(2 ** 29.5) and np.all(np.diff(e) < 0)
    s = tables.activation_table("silu")
    assert s[1024] == 0 and s[1024 + 64] == round(65536 / (1 + math.exp(-1)))
    g = tables.activation_table("gelu")
    assert abs(g[1024 + 64] / 65536 - 0.8411920) < 2e-5
    cos, sin = tables.rope_tables(64, 100000.0, 3000)
    p = np.arange(3000)[:, None]
    theta = 100000.0 ** (-np.arange(0, 64, 2) / 64)
    assert np.abs(cos / 2 ** 15 - np.cos(p * theta)).max() < 2e-5
    assert np.abs(sin / 2 ** 15 - np.sin(p * theta)).max() < 2e-5


def test_rope_tables_equal_the_spec(monkeypatch):
    """The fast RoPE tables (products of two series' values, grown as positions grow)
    equal the spec's series at every angle, also where the guard hands entries near a
    Q30 tie to the series: a guard of 2^-3 sends about a quarter of them there."""
    cases = (((64, 100000.0, 1.0), (700, 5000)), ((256, 1e6, 8.0), (4200,)))
    for (d, base, scale), steps in cases:
        for n in steps:
            got, want = tables.rope_tables(d, base, n, scale), tables.rope_tables_spec(d, base, n, scale)
            assert all(np.array_equal(a, b) for a, b in zip(got, want)), (d, base, n)
    monkeypatch.setattr(tables._RopeFactors, "_GUARD", 3)
    f = tables._RopeFactors(64, 12345.0, 1.0)
    f.extend(70)
    want = tables.rope_tables_spec(64, 12345.0, 70 * 64)
    assert f.by_series > 0.1 * f.hi.size
    got = tables._combine(f.hi, f.lo, 70 * 64)
    assert all(np.array_equal(a, b) for a, b in zip(got, want))


def test_isqrt_exact():
    g = torch.Generator().manual_seed(0)
    n = torch.cat([torch.randint(0, 1 << 62, (20000,), generator=g),
                   torch.arange(0, 5000), torch.tensor([(1 << 62), (1 << 31) ** 2 - 1])])
    r = intops.isqrt(n)
    assert all(int(a) == math.isqrt(int(b)) for a, b in zip(r, n))


@pytest.mark.skipif(not PATHS, reason="no C compiler")
@pytest.mark.parametrize("values", ["random", "extreme"])
def test_gemm_every_path_exact(values):
    """Every matrix-product path gives the exact sum mod 2^32 on shapes that cut every
    blocking (rows around the AMX path's 16-row tiles and the AVX-512 path's 12, columns
    around 32-column panels, K odd and not a multiple of 64), at 1-3 threads."""
    import ctypes
    set_min_work = kernels.library().gemm_i8_set_min_work
    set_min_work.restype, set_min_work.argtypes = ctypes.c_double, [ctypes.c_double]
    old = set_min_work(0.0)                 # every requested thread runs
    g = torch.Generator().manual_seed(7)
    try:
        for M, N, K in [(1, 1, 1), (3, 5, 7), (15, 31, 63), (16, 32, 64), (17, 33, 65),
                        (33, 100, 130), (40, 65, 577), (12, 64, 1537)]:
            if values == "extreme":         # every product at its largest magnitude
                a = torch.where(torch.rand(M, K, generator=g) < 0.5, -32768, 32767)
                w = torch.where(torch.rand(N, K, generator=g) < 0.5, -128, 127)
            else:
                a = torch.randint(-32768, 32768, (M, K), generator=g)
                w = torch.randint(-128, 128, (N, K), generator=g)
            want = ((a @ w.T + 2 ** 31) % 2 ** 32 - 2 ** 31).to(torch.int32)
            a, w = a.to(torch.int16), w.to(torch.int8)
            for path in ["auto"] + PATHS:
                k = kernels.Kernels(path)
                packed = k.pack(w)
                for threads in (1, 2, 3):
                    assert torch.equal(k.gemm(a, packed, threads), want), (path, M, N, K)
                junk = torch.full((M * N + 5,), -7, dtype=torch.int32)   # a used scratch
                got = k.gemm(a, packed, 2, scratch=junk)
                assert torch.equal(got, want) and got.data_ptr() == junk.data_ptr()
                small = torch.empty(M * N - 1, dtype=torch.int32)       # too small: not used
                got = k.gemm(a, packed, 2, scratch=small)
                assert torch.equal(got, want) and got.data_ptr() != small.data_ptr()
    finally:
        set_min_work(old)


@pytest.mark.skipif(not PATHS, reason="no C compiler")
def test_output_layer_sums_reuse_one_buffer(tiny_gemma):
    """The output layer's sums go to one buffer per thread, grown when a block needs more
    (a new one per block mapped and cleared fresh pages: 11.5 million page faults in a
    level 9 compress of alice29); logits computed through it in blocks of any size are
    those of one block in a fresh buffer (the engine's tests compare those with the
    reference)."""
    fm = ExactEngine(tiny_gemma, kernel="auto").kernel
    C = tiny_gemma.config.n_embd
    g = torch.Generator().manual_seed(3)
    a = torch.randint(-3000, 3000, (9, C), generator=g).to(torch.int16)
    ex = torch.randint(0, 4, (9,), generator=g, dtype=torch.int32)
    want = fm.clone().logits((a, ex), 1, block=9)
    first = fm.logits((a, ex), 2, block=4)
    ptr = fm._local.head.data_ptr()
    assert torch.equal(first, want)
    assert torch.equal(fm.logits((a, ex), 2, block=2), want)
    assert fm._local.head.data_ptr() == ptr                   # reused, not reallocated
    assert torch.equal(fm.logits((a, ex), 1, block=9), want)  # grown for a larger block
    seen = []
    t = threading.Thread(target=lambda: (fm.logits((a, ex), 1, block=4),
                                         seen.append(fm._local.head.data_ptr())))
    t.start()
    t.join()
    assert seen and seen[0] != fm._local.head.data_ptr()     # another thread, its own


class _Cache:
    """A random KV cache in the C kernels' layout (fast.py's KVCache): S segments of
    Smax positions, K kv heads, head size D."""

    def __init__(self, S, K, D, Smax, seed):
        g = torch.Generator().manual_seed(seed)
        self.max_len = Smax
        self.kt = [torch.randint(-127, 128, (S, K, Smax, D), generator=g, dtype=torch.int8)]
        self.vq = [torch.randint(-127, 128, (S, K, Smax, D), generator=g, dtype=torch.int8)]
        # score multipliers km 2^(ke - 44) with km <= 2^22; value scales sigma < 2^24
        km = torch.randint(1, 1 << 22, (S, K, Smax), generator=g, dtype=torch.int64)
        self.ksd = [km.double() * 2.0 ** -40]
        self.vsd = [torch.randint(0, 1 << 24, (S, K, Smax), generator=g).double()]


@pytest.mark.skipif(not PATHS, reason="no C compiler")
@pytest.mark.parametrize("D,window", [(64, 0), (64, 37), (128, 0)])
def test_attention_every_level_equal(D, window):
    """Attention gives the same integers at every level the CPU has: one row at a time
    (levels 0-3) and, at level 4, blocks of up to 16 consecutive positions on AMX tiles;
    runs of rows of several lengths (1, 3, 16, 21), two segments, a sliding window,
    value scales up to 2^24 (the weighted sums take all five bytes of w)."""
    from llmzip.engine.exact import tables as T
    H, K, Smax = 6, 2, 160
    cache = _Cache(2, K, D, Smax, seed=D + window)
    g = torch.Generator().manual_seed(1)
    rows = ([(0, p) for p in range(0, 21)] + [(1, 100)] + [(1, p) for p in range(130, 133)]
            + [(0, p) for p in range(120, 160)] + [(1, p) for p in range(3, 19)])
    row_b = torch.tensor([b for b, _ in rows], dtype=torch.int32)
    row_pos = torch.tensor([q for _, q in rows], dtype=torch.int32)
    M = len(rows)
    q16 = torch.randint(-32767, 32768, (M, H * D), generator=g, dtype=torch.int16)
    eq = torch.randint(-12, -2, (M, H), generator=g, dtype=torch.int32)
    exp32 = torch.from_numpy(T.exp2_table()).to(torch.int32)
    outs = {}
    for path in PATHS:
        k = kernels.Kernels(path)
        for threads in (1, 2):
            y = k.attention(q16, eq, H, K, D, row_b, row_pos, cache, 0, window, exp32, threads)
            outs[(path, k.level, threads)] = y
    (first, want), *rest = outs.items()
    assert want.abs().sum() > 0
    for key, y in rest:
        assert torch.equal(y, want), (key, first)


@pytest.mark.skipif(not PATHS, reason="no C compiler")
@pytest.mark.parametrize("split", [16, 48])
def test_attention_split_positions_equal(split):
    """Fewer (row, kv head) pairs than threads (a decoding step of one segment) split
    their positions between threads in chunks: the same integers as one thread per pair,
    at every level, with and without a sliding window, chunks cut inside the window."""
    from llmzip.engine.exact import tables as T
    H, D, Smax = 6, 64, 160
    exp32 = torch.from_numpy(T.exp2_table()).to(torch.int32)
    g = torch.Generator().manual_seed(split)
    for K, window in ((1, 0), (1, 77), (2, 0)):     # split where (rows x K) < threads
        cache = _Cache(2, K, D, Smax, seed=window + K)
        for rows in ([(0, 159)], [(1, 100)], [(0, 40)], [(1, 130), (0, 151)]):
            row_b = torch.tensor([b for b, _ in rows], dtype=torch.int32)
            row_pos = torch.tensor([q for _, q in rows], dtype=torch.int32)
            q16 = torch.randint(-32767, 32768, (len(rows), H * D), generator=g,
                                dtype=torch.int16)
            eq = torch.randint(-12, -2, (len(rows), H), generator=g, dtype=torch.int32)
            outs = []
            for path in PATHS:
                k = kernels.Kernels(path)
                for threads, chunk in ((1, 0), (2, split), (3, split)):
                    old = kernels.attention_split(chunk)
                    try:
                        outs.append(k.attention(q16, eq, H, K, D, row_b, row_pos, cache, 0,
                                                window, exp32, threads))
                    finally:
                        kernels.attention_split(old)
            assert outs[0].abs().sum() > 0
            assert all(torch.equal(y, outs[0]) for y in outs[1:]), (K, window, rows)


@pytest.mark.skipif(not PATHS, reason="no C compiler")
@pytest.mark.parametrize("H,K,D,sigma_bits,spread", [
    (9, 3, 64, 24, 12), (9, 3, 64, 8, 12), (4, 1, 256, 16, 12), (4, 1, 256, 24, 2),
    (6, 2, 128, 1, 6)])
def test_attention_values_every_level_equal(H, K, D, sigma_bits, spread):
    """The weighted sums of values at level 3 go through integer byte products (w = p vs
    in L bytes, four positions to a VNNI instruction): the same integers as every other
    level, for SmolLM2's and Gemma's head shapes, value scales of 1 to 24 bits (w in 3 to
    5 bytes), flat and peaked weights (most positions 0), up to 1,203 positions
    (tails of every length), one thread a pair and positions split between threads, and
    level 3 with its float64 sums (attention_vnni_values off)."""
    from llmzip.engine.exact import tables as T
    Smax = 1216
    cache = _Cache(2, K, D, Smax, seed=D + sigma_bits)
    g = torch.Generator().manual_seed(sigma_bits)
    cache.vsd = [torch.randint(0, 1 << sigma_bits, (2, K, Smax), generator=g).double()]
    rows = [(0, 1202), (1, 1203), (0, 998), (1, 37), (0, 5), (1, 641), (0, 1000)]
    row_b = torch.tensor([b for b, _ in rows], dtype=torch.int32)
    row_pos = torch.tensor([q for _, q in rows], dtype=torch.int32)
    q16 = torch.randint(-32767, 32768, (len(rows), H * D), generator=g, dtype=torch.int16)
    eq = torch.randint(-spread - 4, -spread, (len(rows), H), generator=g, dtype=torch.int32)
    exp32 = torch.from_numpy(T.exp2_table()).to(torch.int32)
    outs = {}
    for path, vnni in [(p, True) for p in PATHS] + [("avx512vnni", False)] * (
            "avx512vnni" in PATHS):
        k = kernels.Kernels(path)
        for threads, chunk, window in ((1, 0, 0), (2, 64, 0), (1, 0, 300), (2, 0, 0)):
            old, old_vnni = kernels.attention_split(chunk), kernels.attention_vnni_values(vnni)
            try:
                for i in range(len(rows)):        # one row a call: a decoding step
                    outs.setdefault((path, vnni, threads, chunk, window), []).append(
                        k.attention(q16[i:i + 1], eq[i:i + 1], H, K, D, row_b[i:i + 1],
                                    row_pos[i:i + 1], cache, 0, window, exp32, threads))
            finally:
                kernels.attention_split(old)
                kernels.attention_vnni_values(old_vnni)
    for window in (0, 300):
        got = {key: torch.cat(v) for key, v in outs.items() if key[-1] == window}
        (first, want), *rest = got.items()
        assert want.abs().sum() > 0
        for key, y in rest:
            assert torch.equal(y, want), (key, first)


def test_rshift_round_and_quant():
    v = torch.arange(-1000, 1000)
    for s in (0, 1, 3, 7):
        want = torch.tensor([math.floor((int(x) + (1 << s >> 1)) / (1 << s)) for x in v])
        assert torch.equal(intops.rshift_round(v, s), want)
        assert torch.equal(intops.rshift_round(v, torch.full_like(v, s)), want)
    assert torch.equal(intops.rshift_round(v, -2), v * 4)
    g = torch.Generator().manual_seed(1)
    y = torch.randint(-(1 << 40), 1 << 40, (50, 97), generator=g)
    y[3] = 0
    y[4] = 1000
    for levels in (127, 5000, 32767):
        q, e = intops.quant_pow2(y, levels)
        assert int(q.abs().max()) <= levels
        smaller = intops.rshift_round(y.abs().amax(-1, keepdim=True), (e - 1).clamp(min=0))
        assert bool(((e == 0) | (smaller > levels)).all())          # e is the smallest


def test_lut_activation_close_to_float():
    x = torch.arange(-20 * 4096, 20 * 4096, 37)
    for name, f in (("silu", torch.nn.functional.silu),
                    ("gelu", lambda t: torch.nn.functional.gelu(t, approximate="tanh"))):
        y = intops.lut_activation(x, name, 12).double() / 4096
        assert (y - f(x.double() / 4096)).abs().max() < 3e-4


def test_weights_quantisation_bound():
    g = torch.Generator().manual_seed(2)
    Wf = torch.randn(64, 300, generator=g) * torch.rand(64, 1, generator=g)
    lin = W.int_linear(Wf)
    l1 = lin.w.abs().long().sum(1).max()
    assert int(l1) * lin.levels < 2 ** 31 and int(lin.mult.max()) < 2 ** 24
    back = lin.w.double() * lin.mult[:, None].double() / 2.0 ** lin.sb
    assert (back - Wf.double()).abs().max() <= Wf.abs().max() / 127


# ------------------------------------------------------------------ engine paths

def _segments(model, n_seg, length, offset=0):
    from llmzip.codec.tokenizer import tokenizer_for
    ids = tokenizer_for(model).encode(DATA)
    return [np.asarray(ids[offset + i * 7: offset + i * 7 + length - (i % 3)])
            for i in range(n_seg)]


def _prefill(engine, segments):
    return [f.copy() for _, _, f in engine.encode_steps(segments)]


def _steps(engine, segments):
    out = []

    def choose(t, live, f):
        out.append(f.copy())
        return np.array([segments[i][t] for i in live])

    engine.lockstep([len(s) for s in segments], choose)
    return out


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def wide_heads(tmp_path_factory):
    """Tiny models with 64-dimension heads: the size AMX attention (level 4) takes."""
    from llmzip.engine.models.registry import load_model
    from llmzip.engine.models.tiny import write_tiny_gemma_gguf, write_tiny_gguf
    d = tmp_path_factory.mktemp("wide")
    return {"llama-d64": load_model(write_tiny_gguf(str(d / "l.gguf"), seed=5, n_embd=128,
                                                    n_head=2, n_kv_head=1, ffn=96)),
            "gemma-d64": load_model(write_tiny_gemma_gguf(str(d / "g.gguf"), seed=6,
                                                          head_dim=64))}


@pytest.fixture(scope="module", params=["llama", "gemma", "llama-d64", "gemma-d64"])
def model(request, tiny_model, tiny_gemma, wide_heads):
    return {"llama": tiny_model, "gemma": tiny_gemma}.get(request.param) \
        or wide_heads[request.param]


@pytest.fixture(scope="module")
def oracle(model):
    segs = _segments(model, 3, 90)
    return segs, _prefill(ExactEngine(model, kernel="reference"), segs)


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_path_equals_the_reference(model, oracle, kernel):
    segs, want = oracle
    e = ExactEngine(model, kernel=kernel, threads=2)
    assert _same(_prefill(e, segs), want)
    assert _same(_steps(e, segs), want)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_do_not_matter(model, oracle, threads, monkeypatch):
    """Every kernel split over threads (the size limits below which calls run on one
    thread are lifted: the tiny model's calls are all small)."""
    monkeypatch.setattr(kernels, "GEMM_PAR_MACS", 0)
    monkeypatch.setattr(kernels, "ROWS_PAR_ITEMS", 0)
    segs, want = oracle
    assert _same(_prefill(ExactEngine(model, threads=threads), segs), want)
    assert _same(_steps(ExactEngine(model, threads=threads), segs), want)


@pytest.mark.parametrize("batch", [1, 2, 7, 64])
def test_batch_composition_does_not_matter(model, batch):
    """Segment 0's tables are the same whatever other segments share its batch."""
    alone = _prefill(ExactEngine(model, threads=1), _segments(model, 1, 60))
    segs = _segments(model, batch, 60)
    both = _prefill(ExactEngine(model, threads=2), segs)
    assert _same([f[:1] for f in both], alone)


def test_prefill_block_size_does_not_matter(model, oracle, monkeypatch):
    from llmzip.engine.exact import engine as E
    segs, want = oracle
    monkeypatch.setattr(E, "FREQ_BLOCK_BYTES", 4 * model.config.vocab_size * 3 * 5)  # 5 rows
    assert _same(_prefill(ExactEngine(model), segs), want)


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_row_chunks_do_not_matter(model, oracle, monkeypatch, chunk):
    """The fast path runs a layer's row-wise work in chunks of rows: any size, same integers."""
    from llmzip.engine.exact import fast
    segs, want = oracle
    monkeypatch.setattr(fast, "ROW_CHUNK", chunk)
    assert _same(_prefill(ExactEngine(model, threads=2), segs), want)


@pytest.mark.parametrize("fused", [0, 1 << 30])
def test_fused_layers_equal_the_kernel_calls(model, oracle, monkeypatch, fused):
    """All layers in one C call (exact_step.c; by default for blocks of up to ROW_CHUNK
    rows, hence every decoding step) or kernel by kernel from Python: the same integers,
    for the prefill and the steps, split over threads or not."""
    from llmzip.engine.exact import fast
    monkeypatch.setattr(fast, "FUSED_ROWS", fused)
    monkeypatch.setattr(kernels, "GEMM_PAR_MACS", 0)
    monkeypatch.setattr(kernels, "ROWS_PAR_ITEMS", 0)
    segs, want = oracle
    for threads in (1, 2):
        e = ExactEngine(model, threads=threads)
        assert _same(_prefill(e, segs), want)
        assert _same(_steps(e, segs), want)


def test_two_processes(tiny_gguf, tiny_model):
    code = ("import hashlib, numpy as np, sys; sys.path.insert(0, 'tests');"
            "from test_exact import _segments, _prefill;"
            "from llmzip.engine.models.registry import load_model;"
            "from llmzip.engine.exact import ExactEngine;"
            f"m = load_model({tiny_gguf!r});"
            "h = hashlib.sha256(b''.join(f.tobytes() for f in "
            "_prefill(ExactEngine(m), _segments(m, 3, 90))));"
            "print(h.hexdigest())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    here = hashlib.sha256(b"".join(f.tobytes() for f in _prefill(
        ExactEngine(tiny_model), _segments(tiny_model, 3, 90)))).hexdigest()
    assert other == here


# ------------------------------------------------------------------ archives

@pytest.fixture(scope="module")
def archives(tiny_model):
    return {k: llmzip.compress(DATA, model=tiny_model, kernel=k, batch=4, seg_len=200,
                               fallback=False, level=1)
            for k in (["reference"] + PATHS[:1] + PATHS[-1:])}


def test_archives_identical_whatever_the_kernel(archives):
    blobs = set(archives.values())
    assert len(blobs) == 1
    assert ct.scan(next(iter(blobs))).version == 9


@pytest.mark.parametrize("kernel", KERNELS)
def test_archive_decodes_with_every_path(tiny_model, archives, kernel):
    for blob in archives.values():
        assert llmzip.decompress(blob, model=tiny_model, kernel=kernel, threads=3) == DATA
        break


def _forged(blob, **engine):
    info = ct.scan(blob)
    header = dict(info.header, engine=dict(info.header["engine"], **engine))
    start = info.chunks[0].offset - ct._CHUNK.size - 4
    return ct.header_bytes(header) + blob[start:]


def test_other_integer_weights_refused(tiny_model, archives):
    blob = _forged(next(iter(archives.values())), weights="0123456789abcdef")
    with pytest.raises(EngineMismatchError, match="integer weights"):
        llmzip.decompress(blob, model=tiny_model)


def test_other_arithmetic_version_refused(tiny_model, archives):
    blob = _forged(next(iter(archives.values())), arith=2)
    with pytest.raises(FormatError, match="arithmetic version 2"):
        llmzip.decompress(blob, model=tiny_model)


def test_usage_errors(tiny_model):
    with pytest.raises(UsageError, match="cuda"):
        llmzip.Compressor(tiny_model, device="cuda")
    with pytest.raises(UsageError, match="cuda"):
        llmzip.Decompressor(tiny_model, device="cuda")
    with pytest.raises(UsageError, match="engine float"):
        llmzip.Compressor(tiny_model, dtype="bfloat16")
    with pytest.raises(UsageError, match="kernel"):
        llmzip.Compressor(tiny_model, kernel="sse9")


def test_int_weights_cache_roundtrip(tiny_model, tmp_path):
    m = W.from_float(tiny_model.gpt(torch.float32))
    W.save(m, str(tmp_path), tiny_model.fingerprint)
    back = W.load(str(tmp_path), tiny_model.fingerprint, tiny_model.config)
    assert back is not None and back.sha256 == m.sha256
    path = next(tmp_path.iterdir())
    path.write_bytes(path.read_bytes()[:-100])            # damaged: ignored, not trusted
    assert W.load(str(tmp_path), tiny_model.fingerprint, tiny_model.config) is None


@pytest.mark.parametrize("scale", [0.01, 40.0])
def test_extreme_weights_every_path_equals_the_reference(tiny_model, scale):
    """A model whose scores and logits span a huge range (or almost none): clamps, table
    ends and the float64-exact arithmetic of the kernels still give the reference's
    integers."""
    import copy
    from llmzip.engine.exact.fast import FastModel
    from llmzip.engine.exact.kernels import Kernels
    from llmzip.engine.exact.reference import ReferenceModel
    gpt = copy.deepcopy(tiny_model.gpt(torch.float32))
    with torch.no_grad():
        for name, p in gpt.named_parameters():
            if "wqkv" in name or "tok_emb" in name or "w_gate_up" in name:
                p.mul_(scale)
    im = W.from_float(gpt)
    segs = [torch.as_tensor(s) for s in _segments(tiny_model, 2, 70)]
    inp = torch.full((2, 70), tiny_model.bos_id, dtype=torch.long)
    for i, s in enumerate(segs):
        inp[i, 1:len(s)] = s[:-1]
    seg = torch.arange(2)
    ref = ReferenceModel(im)
    want = ref.forward(inp, seg, 0, ref.new_cache(2, 70))
    for path in PATHS:
        fast = FastModel(im, Kernels(path))
        assert torch.equal(fast.forward(inp, seg, 0, fast.new_cache(2, 70), threads=2), want)
        c = fast.new_cache(2, 70)
        steps = torch.cat([fast.forward(inp[:, t:t + 1], seg, t, c) for t in range(70)], 1)
        assert torch.equal(steps, want), path

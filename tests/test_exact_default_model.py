"""The exact engine's determinism matrix on the real default model (slow).

Over the first 8 KB of alice29.txt (about 2,100 tokens, two segments), the integer
frequency tables are the same from: the torch reference, every kernel path this CPU has
(portable C and each SIMD path, forced), threads 1, 2 and 3, batches of 1, 2, 7 and 64
segments, prefill vs KV-cache steps, and a separate process. An archive written with one
forced path decodes exactly with the others. The table is printed (pytest -s shows it)
and docs/engine.md carries it.
"""

import hashlib
import subprocess
import sys

import numpy as np
import pytest

import llmzip
from llmzip.codec import container as ct
from llmzip.engine.exact import ExactEngine, kernels
from conftest import corpus_bytes

pytestmark = pytest.mark.slow

N_BYTES = 8192
PATHS = kernels.supported_paths() if kernels.available() else []
ROWS = []


def _digest(tables) -> str:
    h = hashlib.sha256()
    for f in tables:
        h.update(np.ascontiguousarray(f, dtype=np.int32).tobytes())
    return h.hexdigest()[:16]


def _prefill(engine, segments):
    return [f.copy() for _, _, f in engine.encode_steps(segments)]


def _steps(engine, segments):
    out = []

    def choose(t, live, f):
        out.append(f.copy())
        return np.array([segments[i][t] for i in live])

    engine.lockstep([len(s) for s in segments], choose)
    return out


@pytest.fixture(scope="module")
def segments(default_model):
    from llmzip.codec.tokenizer import tokenizer_for
    ids = np.asarray(tokenizer_for(default_model).encode(corpus_bytes("alice29.txt", N_BYTES)))
    half = len(ids) // 2
    return [ids[:half], ids[half:]]


@pytest.fixture(scope="module")
def oracle(default_model, segments):
    """The reference's tables over all of the 8 KB (prefill: the reference is slow)."""
    d = _digest(_prefill(ExactEngine(default_model, kernel="reference"), segments))
    ROWS.append(("torch reference, prefill", d))
    return d


@pytest.mark.parametrize("kernel", PATHS)
def test_each_kernel_path(default_model, segments, oracle, kernel):
    d = _digest(_prefill(ExactEngine(default_model, kernel=kernel, threads=2), segments))
    ROWS.append((f"kernel {kernel}, prefill, 2 threads", d))
    assert d == oracle


@pytest.mark.parametrize("threads", [1, 3])
def test_threads(default_model, segments, oracle, threads):
    d = _digest(_prefill(ExactEngine(default_model, threads=threads), segments))
    ROWS.append((f"kernel auto, prefill, {threads} thread(s)", d))
    assert d == oracle


def test_steps(default_model, segments, oracle):
    d = _digest(_steps(ExactEngine(default_model, threads=2), segments))
    ROWS.append(("kernel auto, KV-cache steps (the decoder)", d))
    assert d == oracle


def test_separate_process(default_model, segments, oracle, tmp_path):
    np.save(tmp_path / "s0.npy", segments[0])
    np.save(tmp_path / "s1.npy", segments[1])
    code = ("import sys, numpy as np; sys.path.insert(0, 'tests');"
            "from test_exact_default_model import _digest, _prefill;"
            "from llmzip.engine.models.registry import load_model;"
            "from llmzip.engine.exact import ExactEngine;"
            f"s = [np.load({str(tmp_path / 's0.npy')!r}), np.load({str(tmp_path / 's1.npy')!r})];"
            "print(_digest(_prefill(ExactEngine(load_model(None), threads=1), s)))")
    d = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True).stdout.strip()
    ROWS.append(("kernel auto, another process, 1 thread", d))
    assert d == oracle


@pytest.mark.parametrize("batch", [1, 2, 7, 64])
def test_batch_composition(default_model, segments, batch):
    """The first 128 tokens of segment 0, computed alone and beside batch - 1 others."""
    head = segments[0][:128]
    others = [segments[1][i * 16:i * 16 + 128] for i in range(batch - 1)]
    alone = _digest(_prefill(ExactEngine(default_model, threads=1), [head]))
    mixed = _prefill(ExactEngine(default_model, threads=2), [head] + others)
    d = _digest([f[:1] for f in mixed])
    ROWS.append((f"128 tokens beside {batch - 1} other segment(s) vs alone", d + " vs " + alone))
    assert d == alone


def test_archive_from_one_path_decodes_with_the_others(default_model):
    data = corpus_bytes("alice29.txt", 2500)
    first, last = PATHS[0], PATHS[-1]
    blob = llmzip.compress(data, model=default_model, kernel=first, fallback=False)
    other = llmzip.compress(data, model=default_model, kernel=last, fallback=False)
    assert blob == other
    for k in PATHS:
        assert llmzip.decompress(blob, model=default_model, kernel=k) == data
    ROWS.append((f"archive by {first} == archive by {last}; decodes with every path",
                 "exact"))


def test_window_and_adaptation_on_the_real_model(default_model):
    """Level 6's parts (a window whose keys and values shift, the adaptive models) on
    SmolLM2 itself: two kernel paths write the same archive, which decodes with a third."""
    data = corpus_bytes("alice29.txt", 6000)
    kw = dict(model=default_model, window=512, stride=128, seg_len=900, fallback=False,
              adapt={"bias": 14000, "tau": 2000000, "match": 20000})
    blob = llmzip.compress(data, kernel=PATHS[-1], **kw)
    eng = ct.scan(blob).header["engine"]
    assert (eng["window"], eng["slide"]) == (512, "shift")
    assert llmzip.compress(data, kernel=PATHS[0], **kw) == blob
    assert llmzip.decompress(blob, model=default_model, kernel=PATHS[len(PATHS) // 2]) == data
    ROWS.append(("window 512 shifted by 128 + adaptive models: archive by "
                 f"{PATHS[0]} == by {PATHS[-1]}; decodes with {PATHS[len(PATHS) // 2]}",
                 "exact"))


def test_print_matrix():
    width = max((len(r[0]) for r in ROWS), default=10)
    print()
    for name, digest in ROWS:
        print(f"{name:<{width}}  tables sha256 {digest}")


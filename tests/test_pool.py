"""The exact kernels' one thread pool (engine/kernels/pool.c), through the kernels that use
it: any thread count (more threads than items too), long runs of calls with changing
thread counts, calls from several Python threads at once, a forked child, more items than
the pool's claim counter holds, and allocation failures reported from any thread."""

import ctypes
import multiprocessing
import os
import subprocess
import sys
import threading

import pytest
import torch

from llmzip.engine.exact import kernels

pytestmark = pytest.mark.skipif(not kernels.available(), reason="no C compiler")


@pytest.fixture(scope="module")
def k():
    return kernels.Kernels()


@pytest.fixture(autouse=True)
def every_call_threaded(monkeypatch):
    """No size limit below which a call runs on one thread: every call uses the pool."""
    monkeypatch.setattr(kernels, "GEMM_PAR_MACS", 0)
    monkeypatch.setattr(kernels, "ROWS_PAR_ITEMS", 0)
    set_min_work = kernels.library().gemm_i8_set_min_work    # see gemm_i8.h
    set_min_work.restype, set_min_work.argtypes = ctypes.c_double, [ctypes.c_double]
    old = set_min_work(0.0)
    yield
    set_min_work(old)


def _rows(M, K, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-(1 << 40), 1 << 40, (M, K), generator=g, dtype=torch.int64)


def test_more_threads_than_items(k):
    for M in (0, 1, 2, 3):
        y = _rows(M, 40, M)
        want = k.quant(y, 127, 1)
        for threads in (2, 3, 8, 300):
            got = k.quant(y, 127, threads)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_many_calls_in_a_row(k):
    """Matrix products and row-wise calls back to back, the thread count changing between
    them (workers joining, sitting out, spinning, sleeping), as a forward pass does."""
    g = torch.Generator().manual_seed(1)
    w = k.pack(torch.randint(-127, 128, (96, 64), generator=g, dtype=torch.int8))
    a = torch.randint(-3000, 3000, (37, 64), generator=g, dtype=torch.int16)
    want_mm = k.gemm(a, w, 1)
    y = _rows(33, 50, 2)
    want_q = k.quant(y, 2047, 1)
    for i in range(3000):
        t = 1 + i % 4
        if i % 2:
            assert torch.equal(k.gemm(a, w, t), want_mm)
        else:
            got = k.quant(y, 2047, t)
            assert torch.equal(got[0], want_q[0]) and torch.equal(got[1], want_q[1])


def test_more_items_than_claims(k):
    """Above 65535 items the pool hands out groups of consecutive items."""
    y = _rows(70001, 3, 3)
    want = k.quant(y, 127, 1)
    for threads in (2, 3):
        got = k.quant(y, 127, threads)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_calls_from_several_python_threads(k):
    """ctypes lets go of the GIL: calls from several threads meet in the pool (one at a
    time) and each gets its own results."""
    ys = [_rows(200 + 17 * i, 64, 10 + i) for i in range(4)]
    wants = [k.quant(y, 32767, 1) for y in ys]
    errors = []

    def run(i):
        try:
            for n in range(200):
                got = k.quant(ys[i], 32767, 1 + (i + n) % 3)
                assert torch.equal(got[0], wants[i][0]) and torch.equal(got[1], wants[i][1])
        except BaseException as e:        # noqa: BLE001 -- reported below
            errors.append(e)

    th = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in th:
        t.start()
    for t in th:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in th), "a call never returned"
    assert not errors, errors[0]


def _child(q):
    k = kernels.Kernels()
    y = _rows(300, 64, 5)
    q.put([t.tolist() for t in k.quant(y, 127, 3)])


def test_forked_child_starts_its_own_workers(k):
    y = _rows(300, 64, 5)
    k.quant(y, 127, 3)                       # the parent's workers exist
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q,))
    p.start()
    got = q.get(timeout=120)
    p.join(timeout=60)
    assert p.exitcode == 0
    assert got == [t.tolist() for t in k.quant(y, 127, 1)]


FAIL_CHILD = r"""
import resource, torch
from llmzip.engine.exact import kernels
k = kernels.Kernels()
lib = k.lib
k.quant(torch.zeros((64, 8), dtype=torch.int64), 127, 2)     # workers started
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + (256 << 20), hard))
# attention at position 2^30: its scratch (gigabytes) cannot be allocated; nothing is read
M, H, K, D = 6, 2, 1, 4
i32 = lambda *v: torch.tensor(v, dtype=torch.int32)
q16, eq = torch.zeros((M, H, D), dtype=torch.int16), torch.zeros((M, H), dtype=torch.int32)
row_b, row_pos = i32(*[0] * M), i32(*[1 << 30] * M)
kt, vc = torch.zeros(64, dtype=torch.int8), torch.zeros(64, dtype=torch.int8)
ksd, vsd = torch.zeros(16, dtype=torch.float64), torch.zeros(16, dtype=torch.float64)
exp32, y = torch.zeros(1024, dtype=torch.int32), torch.zeros((M, H * D), dtype=torch.int64)
for threads in (1, 2, 3):
    rc = lib.llmzip_ex_attention(M, H, K, D, q16.data_ptr(), eq.data_ptr(), row_b.data_ptr(),
                                 row_pos.data_ptr(), kt.data_ptr(), ksd.data_ptr(),
                                 vc.data_ptr(), vsd.data_ptr(), 16, 0, exp32.data_ptr(),
                                 y.data_ptr(), k.level, threads)
    print(rc)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and RLIMIT_AS")
def test_allocation_failure_is_reported_from_any_thread():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", FAIL_CHILD], capture_output=True, text=True,
                       timeout=300, cwd=root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2", "2", "2"]

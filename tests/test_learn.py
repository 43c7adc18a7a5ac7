"""Dynamic evaluation in exact arithmetic (engine/exact/learn.py): the gradients are the
model's, the steps are Adam's, and encoder and decoder learn the same weights.

The integer backward pass is checked against float64 autograd on the same integer
model; the encoder's prefill and the decoder's steps must give the same tables at every
position while the weights move, on every kernel path; archives must round-trip and be
identical whatever the kernel or thread count.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmzip.codec.adapt import AdaptConfig
from llmzip.codec.api import Compressor
from llmzip.codec.decompressor import Decompressor
from llmzip.engine.exact import ExactEngine, ExactProfile
from llmzip.engine.exact import learn
from llmzip.engine.exact.reference import ACT_FRAC
from llmzip.errors import UsageError
from conftest import corpus_bytes

RATE = 1 << 20            # ~1e-3: tiny models need large steps to show a gain quickly
BLOCK = 16


@pytest.fixture(autouse=True)
def short_blocks(monkeypatch):
    """Tiny models code short texts: a step every 16 positions instead of 256."""
    monkeypatch.setattr(learn, "BLOCK", BLOCK)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


def test_norm_backward_is_the_rmsnorm_gradient():
    """norm_backward gives the gradient per integer unit of a Q16 input (2^-16 of the
    real one) of x / rms(x) * gain, as autograd does in float64."""
    torch.manual_seed(0)
    C = 48
    x = torch.randint(-2 ** 18, 2 ** 18, (5, C))
    x[:, 3] *= 300                                       # an outlier feature, as LLMs have
    gain = torch.randint(2 ** 14, 2 ** 17, (C,))
    dy = torch.randint(-2 ** 20, 2 ** 20, (5, C))
    d, e = learn.norm_backward(x, gain, dy, -10)
    xr = (x.double() / 2 ** 16).requires_grad_(True)
    y = xr / xr.pow(2).mean(-1, keepdim=True).sqrt() * (gain.double() / 2 ** 16)
    y.backward(dy.double() / 2 ** 10)
    ours = d.double() * 2.0 ** e
    assert _cos(ours, xr.grad) > 0.9999
    assert abs(float(ours.norm() / xr.grad.norm()) * 2 ** 16 - 1) < 1e-3


def test_activation_slope_is_the_derivative():
    x = torch.arange(-20 << 12, 20 << 12, 37)
    s = learn.act_slope(x, "silu", ACT_FRAC).double() / 1024
    xf = (x.double() / 4096).requires_grad_(True)
    F.silu(xf).sum().backward()
    assert float((s - xf.grad).abs().max()) < 0.01


def _run_block(engine, ids):
    """One block of tokens through a learner: forward with capture, observe, step."""
    L = engine.learner(1)
    L.keep_grads = True
    cache = L.run.new_cache(1, len(ids) + 1)
    cap = L.capture()
    inp = torch.from_numpy(np.concatenate([[engine.model.bos_id], ids[:-1]]))[None]
    f = L.run.forward(inp, torch.tensor([0]), 0, cache, 1, capture=cap)[0].numpy()
    L.captured(np.zeros(len(ids), dtype=np.int64), np.arange(len(ids)), cap)
    for j in range(len(ids)):
        L.observe(j, np.array([0]), f[j:j + 1], ids[j:j + 1])
    L.sync()
    return L, cap, f


def test_weight_gradients_match_float_autograd(tiny_model):
    """The integer weight gradients of both trained MLPs point where float64 autograd's
    do, on the integer model's own weights and captured inputs, attention of the last
    layer held fixed as the learner holds it."""
    rng = np.random.default_rng(1)
    ids = rng.integers(0, tiny_model.config.vocab_size, BLOCK)
    engine = ExactEngine(tiny_model, ExactProfile(adapt={"dyneval": 1000}), kernel="reference")
    L, cap, f = _run_block(engine, ids)
    assert L.steps == 1
    m = engine.imodel

    def W(lin):
        return lin.w.double() * lin.mult.double()[:, None] * 2.0 ** -lin.sb

    def norm(x, gain):
        return x / x.pow(2).mean(-1, keepdim=True).sqrt() * (gain.double() / 2 ** 16)

    ws = {}

    def mlp(li, x):
        Lr = m.layers[li]
        ws[(li, "gate_up")] = Wgu = W(Lr.gate_up).requires_grad_(True)
        ws[(li, "down")] = Wd = W(Lr.down).requires_grad_(True)
        gate, up = (norm(x, Lr.ffn_norm) @ Wgu.t()).split(m.cfg.ffn_hidden, -1)
        return x + (F.silu(gate) * up) @ Wd.t()

    first, last = L.layers
    x = mlp(first, cap[first].double() / 2 ** 16)
    x = mlp(last, x + (cap[last].double() / 2 ** 16 - x.detach()))
    logits = norm(x, m.norm) @ W(m.head).t()
    F.cross_entropy(logits, torch.from_numpy(ids), reduction="sum").backward()
    for key, (g, en, ek) in L.last_grads.items():
        ours = g.double() * torch.pow(2.0, (en + ek).double())
        assert _cos(ours, ws[key].grad) > 0.9, key


def test_first_step_moves_every_weight_by_the_rate(tiny_model):
    """Adam's first step (bias-corrected) moves each weight with a gradient by the rate,
    in real units: rate 2^-30 within rounding."""
    rng = np.random.default_rng(2)
    ids = rng.integers(0, tiny_model.config.vocab_size, BLOCK)
    rate = 1 << 16
    engine = ExactEngine(tiny_model, ExactProfile(adapt={"dyneval": rate}), kernel="reference")
    L, _, _ = _run_block(engine, ids)
    for (li, name), p in L.params.items():
        w0 = getattr(engine.imodel.layers[li], name)
        d = (p.master - (w0.w.long() << learn.MASTER_FRAC)).double() / 2 ** learn.MASTER_FRAC
        d = d * (w0.mult.double() * 2.0 ** -w0.sb)[:, None]
        moved = d[d != 0].abs() / (rate / 2 ** 30)
        assert moved.numel() > 0.9 * d.numel()
        assert float(moved.min()) > 0.9 and float(moved.max()) < 1.1


def _segments(model, lengths=(70, 52, 40)):
    rng = np.random.default_rng(0)
    return [rng.integers(0, model.config.vocab_size, n) for n in lengths]


@pytest.mark.parametrize("kernel", ["reference", "portable", "auto"])
@pytest.mark.parametrize("prof", [ExactProfile(), ExactProfile(window=32, stride=8, slide="shift")],
                         ids=["whole", "shift"])
def test_prefill_equals_steps_while_learning(tiny_model, kernel, prof):
    """With the weights stepping every 16 positions, the encoder's block prefill and the
    decoder's steps see the same tables at every position, and end with the same
    weights, on every kernel path (the reference's prefill is the oracle)."""
    from dataclasses import replace
    prof = replace(prof, adapt={"dyneval": RATE})
    segs = _segments(tiny_model)

    def prefill(kernel):
        e = ExactEngine(tiny_model, prof, kernel=kernel, threads=2)
        L = e.learner(len(segs))
        got = []
        for t, live, f in e.encode_steps(segs, learner=L):
            got.append((t, live.copy(), f.copy()))
            L.observe(t, live, f, np.array([segs[i][t] for i in live]))
        return got, _weights(L)

    def steps(kernel):
        e = ExactEngine(tiny_model, prof, kernel=kernel, threads=2)
        L = e.learner(len(segs))
        got = []

        def choose(t, live, f):
            got.append((t, live.copy(), f.copy()))
            y = np.array([segs[i][t] for i in live])
            L.observe(t, live, f, y)
            return y

        e.lockstep([len(s) for s in segs], choose, learner=L)
        return got, _weights(L)

    want, w_want = prefill("reference")
    for got, w in (prefill(kernel), steps(kernel)):
        assert len(got) == len(want)
        for (t, live, f), (t2, live2, f2) in zip(got, want):
            assert t == t2 and np.array_equal(live, live2) and np.array_equal(f, f2), t
        assert w == w_want
    assert w_want != _weights(ExactEngine(tiny_model, prof).learner(3))   # it learned


def _weights(L) -> str:
    h = hashlib.sha256()
    for p in L.params.values():
        h.update(p.lin.w.numpy().tobytes())
    return h.hexdigest()


TEXT = corpus_bytes("alice29.txt", 6000)


def test_round_trip_identical_archives(tiny_model):
    """A dynamic-evaluation archive decodes exactly and is the same byte for byte from
    the reference and the fast kernels at 1 or 2 threads (model chunks kept)."""
    adapt = {"bias": 14000, "dyneval": RATE}
    kw = dict(seg_len=512, window=128, stride=32, fallback=False, adapt=adapt)
    blobs = {(k, t): Compressor(tiny_model, kernel=k, threads=t, **kw).compress(TEXT)
             for k, t in (("reference", 1), ("auto", 1), ("auto", 2))}
    assert len(set(blobs.values())) == 1
    blob = blobs[("auto", 2)]
    plain = Compressor(tiny_model, **{**kw, "adapt": {"bias": 14000}}).compress(TEXT)
    assert blob != plain
    assert Decompressor(tiny_model).decompress(blob) == TEXT


def test_learning_pays_on_what_it_can_learn(tiny_model):
    """A random model meets a random phrase of 24 tokens repeated: with dynamic
    evaluation the ideal code length falls well below the model's own."""
    from llmzip.codec.lockstep import encode_segments
    rng = np.random.default_rng(5)
    phrase = rng.integers(0, tiny_model.config.vocab_size, 24)
    segs = [np.tile(phrase, 8)[:180], np.tile(np.roll(phrase, 5), 8)[:170]]
    bits = {}
    for rate in (0, 1 << 24):                 # ~0.016: a random model has much to learn
        prof = ExactProfile(adapt={"dyneval": rate} if rate else {})
        bits[rate] = encode_segments(ExactEngine(tiny_model, prof), segs)[1]
    assert bits[1 << 24] < 0.9 * bits[0], bits


def test_config_and_refusals(tiny_gemma):
    assert AdaptConfig.parse("dyneval=1000").dyneval == 1000
    assert not AdaptConfig(dyneval=5).active          # not an Adapter part: the engine's
    with pytest.raises(UsageError, match="Llama"):
        Compressor(tiny_gemma, adapt={"dyneval": RATE}, fallback=False).compress(TEXT[:500])

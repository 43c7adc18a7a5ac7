import numpy as np
import pytest
import torch

from llmzip.codec.coder import RangeDecoder, RangeEncoder
from llmzip.engine.probs import PRECISION, bits_of, logits_to_freqs
from llmzip.errors import FormatError


def test_logits_to_freqs_sums_and_floor():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 1000, generator=g) * 10
    logits[0, 3] = 1e4                       # one nearly certain symbol
    logits[1] = -1e4                          # flat extreme row
    f = logits_to_freqs(logits)
    assert f.dtype == np.int64 and f.shape == (7, 1000)
    assert (f >= 1).all()
    assert (f.sum(axis=1) == 1 << PRECISION).all()


def test_logits_to_freqs_deterministic():
    logits = torch.randn(4, 49152)
    assert np.array_equal(logits_to_freqs(logits), logits_to_freqs(logits.clone()))


def test_round_trip_and_exact_cost():
    rng = np.random.default_rng(1)
    V, n = 500, 400
    logits = torch.from_numpy(rng.standard_normal((n, V)) * 3).float()
    freqs = logits_to_freqs(logits)
    p = freqs / freqs.sum(axis=1, keepdims=True)
    symbols = np.array([rng.choice(V, p=row) for row in p])
    enc = RangeEncoder()
    for i in range(0, n, 37):                 # in steps, as the engine does
        enc.encode_symbols(symbols[i:i + 37], freqs[i:i + 37])
    words = enc.finish()
    dec = RangeDecoder(words)
    out = np.concatenate([dec.decode_symbols(freqs[i:i + 37]) for i in range(0, n, 37)])
    assert np.array_equal(out, symbols)
    ideal = bits_of(freqs, symbols).sum()
    # the coder spends the exact table probabilities: at most ~2 words over the ideal
    assert ideal <= 8 * len(words) <= ideal + 64


def test_coded_distribution_is_the_table():
    """Many symbols of frequency f cost n * (24 - log2 f) bits: no requantisation."""
    V, n = 49152, 3000
    for f in (1, 2, 3, 1000, 1 << 23):
        row = np.ones(V, dtype=np.int64)
        row[7] = f
        row[9] += (1 << PRECISION) - row.sum()
        enc = RangeEncoder()
        enc.encode_symbols(np.full(n, 7), np.tile(row, (n, 1)))
        bits = 8 * len(enc.finish())
        ideal = n * (PRECISION - np.log2(f))
        assert ideal <= bits <= ideal + 64, f


def test_decoder_rejects_misaligned_payload():
    with pytest.raises(FormatError):
        RangeDecoder(b"abc")


def _tables(rng, n, V, skew):
    f = np.ones((n, V), dtype=np.int64)
    w = rng.random((n, V)) ** skew
    f += np.floor(w / w.sum(1, keepdims=True) * ((1 << 24) - V)).astype(np.int64)
    f[np.arange(n), rng.integers(0, V, n)] += (1 << 24) - f.sum(1)
    return f


def test_c_coder_writes_constrictions_words():
    """llmzip's C coder is constriction's queue coder: the same words for the same tables
    (typical, improbable and near-certain symbols; with a debug counter these 60 trials
    went through the coder's carry-pending 'inverted' state 3,773 times), and each
    decodes the other's words."""
    from llmzip.codec import coder
    if coder._lib() is None:
        pytest.skip("no C compiler: the C coder is not built")
    rng = np.random.default_rng(0)
    for trial in range(60):
        V = int(rng.choice([2, 3, 17, 300, 5000]))
        n = int(rng.integers(1, 3000))
        f = _tables(rng, n, V, float(rng.choice([1, 8, 40])))
        if trial % 3 == 0:
            p = f / f.sum(1, keepdims=True)
            sym = np.array([rng.choice(V, p=r) for r in p])
        else:
            sym = (np.argmin if trial % 3 == 1 else np.argmax)(f, 1)
        a, b = RangeEncoder(), RangeEncoder(use_constriction=True)
        for i in range(0, n, 97):
            a.encode_symbols(sym[i:i + 97], f[i:i + 97])
            b.encode_symbols(sym[i:i + 97], f[i:i + 97])
        words = a.finish()
        assert words == b.finish(), trial
        for use in (False, True):
            d = RangeDecoder(words, use_constriction=use)
            out = np.concatenate([d.decode_symbols(f[i:i + 97]) for i in range(0, n, 97)])
            assert np.array_equal(out, sym), (trial, use)


def test_c_coder_rejects_garbage():
    f = _tables(np.random.default_rng(3), 50, 300, 8)
    d = RangeDecoder(b"\xff\xff\xff\xff" * 4)
    with pytest.raises(FormatError):
        for _ in range(50):
            d.decode_symbols(f[:1] * 0 + f[:1])
    with pytest.raises(ValueError):
        RangeEncoder().encode_symbols(np.array([300]), f[:1])

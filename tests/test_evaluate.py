"""engine.score and tools.evaluate: windows, agreement with the engine's ideal bits, the
eval command."""

import numpy as np
import pytest

import llmzip
from llmzip.codec.tokenizer import tokenizer_for
from llmzip.engine.score import _windows, token_bits
from llmzip.tools.evaluate import evaluate, summarize
from conftest import corpus_bytes


@pytest.mark.parametrize("n,width,stride", [(10, 4, None), (10, 4, 2), (9, 3, 1), (3, 5, 2),
                                             (100, 7, 3), (0, 4, None)])
def test_windows_score_every_token_once(n, width, stride):
    scored = []
    for start, end, first in _windows(n, width, stride):
        assert 0 <= start <= first <= end <= n and end - start <= width
        scored += range(first, end)
    assert scored == list(range(n))


def test_chunked_bits_match_compressor_ideal(tiny_model):
    """Independent chunks of L tokens = what compress does with segments of L tokens."""
    data = corpus_bytes("alice29.txt", 3000)
    ids = tokenizer_for(tiny_model).encode(data)
    L = 100
    c = llmzip.Compressor(tiny_model, batch=len(ids) // L + 1, seg_len=L, fallback=False,
                          level=1)
    c.compress(data)
    chunks = [ids[i:i + L] for i in range(0, len(ids), L)]
    # compress balances segment lengths; score the same segments
    lens = [len(x) for x in chunks]
    from llmzip.codec.segment import plan_segments
    plan = plan_segments(len(ids), L, len(lens) + 1)[0]
    bits, pos = 0.0, 0
    for n in plan:
        bits += token_bits(tiny_model, ids[pos:pos + n], context=n + 1).sum()
        pos += n
    assert abs(bits - c.stats.ideal_bits) / bits < 1e-3


def test_stride_gives_more_context(tiny_model):
    data = corpus_bytes("alice29.txt", 2000)
    a = evaluate(tiny_model, data, context=64)
    b = evaluate(tiny_model, data, context=64, stride=16)
    assert a.tokens == b.tokens and np.isfinite(b.bits)
    s = summarize([a, b])
    assert s[tiny_model.name]["files"] == 2


def test_eval_command(tiny_gguf, tmp_path, capsys):
    from llmzip.cli import main
    p = tmp_path / "t.txt"
    p.write_bytes(corpus_bytes("asyoulik.txt", 1500))
    out = tmp_path / "rows.jsonl"
    assert main(["eval", "--model", tiny_gguf, "--context", "128", str(p), "--json",
                 str(out)]) == 0
    assert "bits/byte" in capsys.readouterr().out
    assert out.read_text().count("\n") == 1

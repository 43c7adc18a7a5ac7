"""llmzip.tools.benchreport: totals, tables, the plot's scope and its Pareto front, from rows."""

from llmzip.tools import benchreport


def _row(codec, path, orig, comp, ct=1.0, dt=0.5, ok=True, error=None):
    return {"codec": codec, "label": codec.upper(), "file": path, "path": path,
            "original_bytes": orig, "compressed_bytes": comp,
            "bits_per_byte": None if comp is None else 8 * comp / orig,
            "compress_seconds": ct, "decompress_seconds": dt,
            "compress_bytes_per_s": None if comp is None else orig / ct,
            "decompress_bytes_per_s": None if comp is None else orig / dt,
            "round_trip": ok, "error": error}


def test_pareto_front():
    pts = [(1.0, 2.0), (10.0, 3.0), (5.0, 4.0), (0.5, 1.0), (10.0, 2.5)]
    assert benchreport.pareto_front(pts) == [3, 0, 4]


def test_common_paths():
    rows = [{"codec": "a", "path": "x"}, {"codec": "a", "path": "y"},
            {"codec": "b", "path": "y"}, {"codec": "b", "path": "z"}]
    assert benchreport.common_paths(rows) == {"y"}
    assert benchreport.common_paths(rows[:2]) == {"x", "y"}
    assert benchreport.common_paths([]) == set()


def test_totals_scope():
    rows = [{"codec": "a", "path": "x"}, {"codec": "a", "path": "y"},
            {"codec": "b", "path": "y"}, {"codec": "b", "path": "z"}]
    scope, words = benchreport.totals_scope(rows, 3)
    assert [r["path"] for r in scope] == ["y", "y"]
    assert words == "each codec on the 1 file all codecs have"
    assert benchreport.totals_scope(rows[:2], 2) == (rows[:2], "each codec's files together")
    disjoint = [rows[0], rows[3]]
    scope, words = benchreport.totals_scope(disjoint, 2)
    assert scope == disjoint and "own files" in words


def test_codec_totals_sum_only_verified_cells():
    rows = [_row("a", "x", 1000, 500, ct=2.0), _row("a", "y", 3000, 1000, ct=2.0),
            _row("b", "x", 1000, 250), _row("b", "y", 3000, 900, ok=False,
                                             error="round trip mismatch")]
    tot = {t["codec"]: t for t in benchreport.codec_totals(rows)}
    assert tot["a"]["bits_per_byte"] == 8 * 1500 / 4000
    assert tot["a"]["compress_bytes_per_s"] == 4000 / 4.0
    assert tot["a"]["complete"] and tot["a"]["failures"] == 0
    # the failed cell counts as a file and a failure, never in the bytes
    assert (tot["b"]["files"], tot["b"]["failures"], tot["b"]["complete"]) == (2, 1, False)
    assert tot["b"]["original_bytes"] == 1000 and tot["b"]["bits_per_byte"] == 2.0


def test_pivot_table_marks_partial_totals_and_failures():
    rows = [_row("a", "x", 1000, 500), _row("a", "y", 3000, 1000),
            _row("b", "x", 1000, 250), _row("c", "x", 1000, None, ok=False, error="boom"),
            _row("c", "y", 3000, 3000, ok=False, error="mismatch")]
    md = benchreport.pivot_table(rows, markdown=True)
    lines = md.splitlines()
    assert lines[0] == "| file | bytes | A | B | C |"
    assert lines[2] == "| x | 1000 | 4.000 | 2.000 | err |"
    assert lines[3] == "| y | 3000 | 2.667 | - | 8.000 FAIL |"
    # b ran on one file of two, c failed: both totals are marked as partial
    assert lines[4] == "| TOTAL | 4000 | 3.000 | 2.000* | -* |"


def test_format_rate_units():
    assert benchreport.format_rate(None) == "-"
    assert benchreport.format_rate(512) == "512 B/s"
    assert benchreport.format_rate(1302.4) == "1.3 kB/s"
    assert benchreport.format_rate(25e6) == "25 MB/s"
    assert benchreport.format_rate(3.2e9) == "3.2 GB/s"


def test_format_table_one_file_lists_cells_else_pivots():
    one = [_row("a", "x", 1000, 500), _row("b", "x", 1000, 250)]
    assert "bits/byte" in benchreport.format_table(one).splitlines()[0]
    assert "TOTAL" not in benchreport.format_table(one)
    two = one + [_row("a", "y", 3000, 1000)]
    text = benchreport.format_table(two)
    assert text.startswith("bits per byte\n") and "TOTAL" in text
    assert "per codec (all files)" in text

"""Directory archives (format version 6): a tree round-trips with names, modes, mtimes and
links; one file decodes alone; hostile indexes are refused with exit code 2 and nothing
is written, under the target or outside it."""

import json
import os
import stat

import pytest

import llmzip
from llmzip.cli import main
from llmzip.codec import container as ct
from llmzip.codec import tree
from llmzip.errors import FormatError, UsageError
from conftest import corpus_bytes

KW = dict(batch=2, seg_len=150, fallback=False)
T0 = 1_600_000_000_123_456_789


def make_tree(root):
    files = {
        "a.txt": corpus_bytes("alice29.txt", 2500),
        "sub/b.txt": corpus_bytes("alice29.txt", 6000)[2500:],
        "sub/empty": b"",
        "sub/deeper/bin.dat": bytes(range(256)) * 20,
        "run.sh": b"#!/bin/sh\necho hi\n",
    }
    os.makedirs(root / "sub" / "deeper")
    os.makedirs(root / "emptydir")
    for name, data in files.items():
        (root / name).write_bytes(data)
    os.chmod(root / "run.sh", 0o755)
    os.chmod(root / "sub" / "b.txt", 0o600)
    os.symlink("sub/b.txt", root / "link")
    os.symlink("../a.txt", root / "sub" / "up")
    for i, (folder, dirs, names) in enumerate(sorted(os.walk(root), reverse=True)):
        for n in names + dirs:
            os.utime(os.path.join(folder, n), ns=(T0 + i, T0 + i), follow_symlinks=False)
    return files


def snapshot(root):
    out = {}
    for folder, dirs, names in os.walk(root):
        for n in dirs + names:
            p = os.path.join(folder, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            row = [stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_mtime_ns]
            if stat.S_ISLNK(st.st_mode):
                row.append(os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                row.append(open(p, "rb").read())
            out[rel] = row
    return out


@pytest.fixture
def src(tmp_path):
    root = tmp_path / "corpus"
    make_tree(root)
    return root


def test_tree_round_trip_api(src, tmp_path, tiny_model):
    blob = llmzip.Compressor(tiny_model, **KW).compress_tree(str(src))
    info = ct.scan(blob)
    assert info.version == 9 and info.header["tree"]["files"] == 5
    assert "model" in {c.method_name for c in info.chunks}
    entries = llmzip.list_archive(blob)
    assert [e["path"] for e in entries][:3] == ["a.txt", "emptydir", "link"]
    out = tmp_path / "restored"
    llmzip.extract(blob, str(out), model=tiny_model)
    assert snapshot(out) == snapshot(src)
    with pytest.raises(UsageError, match="directory archive"):
        llmzip.decompress(blob, model=tiny_model)
    with pytest.raises(UsageError, match="already exists"):
        llmzip.extract(blob, str(out), model=tiny_model)


def test_one_file_decodes_without_the_others(src, tiny_model):
    blob = llmzip.Compressor(tiny_model, **KW).compress_tree(str(src))
    info = ct.scan(blob)
    entries = llmzip.list_archive(blob)
    spans = tree.file_spans(entries, info.header["tree"]["index_len"])
    dec = llmzip.Decompressor(tiny_model)
    for name in ("sub/b.txt", "a.txt", "sub/empty"):
        start, size = spans[name]
        want = (src / name).read_bytes()
        assert tree.extract_file_with(dec, blob, name) == want
        own = [c for c in info.chunks if start <= c.orig_offset < start + size]
        assert sum(c.raw_len for c in own) == size          # a file is whole chunks
        assert dec.chunks_decoded == len(own) < len(info.chunks)
    with pytest.raises(UsageError, match="not a file"):
        llmzip.extract_file(blob, "sub", model=tiny_model)


def test_tree_round_trip_cli(src, tmp_path, tiny_gguf, capsys):
    arc = tmp_path / "corpus.llmz"
    args = ["--model", tiny_gguf, "--batch", "2", "--seg-len", "150", "-q"]
    assert main(["compress", str(src), *args, "--verify"]) == 0
    assert arc.exists()
    assert main(["list", str(arc)]) == 0
    listing = capsys.readouterr().out
    assert "link -> sub/b.txt" in listing and "-rwxr-xr-x" in listing
    assert main(["list", str(arc), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 10
    out = tmp_path / "out"
    assert main(["decompress", str(arc), "-o", str(out), *args]) == 0
    assert snapshot(out) == snapshot(src)
    os.rename(src, tmp_path / "moved")
    assert main(["decompress", str(arc), *args]) == 0             # -> corpus/
    assert snapshot(src) == snapshot(out)
    assert main(["decompress", str(arc), *args]) == 1             # exists: refused
    one = tmp_path / "b.txt"
    assert main(["decompress", str(arc), "--file", "sub/b.txt", "-o", str(one),
                 "--model", tiny_gguf]) == 0
    assert one.read_bytes() == (out / "sub" / "b.txt").read_bytes()
    assert "chunks decoded" in capsys.readouterr().err
    assert main(["decompress", str(arc), "-t", *args]) == 0


def _hostile(tiny_model, entries, contents):
    job = tree.TreeJob("/nonexistent", entries=entries, contents=contents)
    return llmzip.Compressor(tiny_model, **KW).compress_tree("", job=job)


def _f(path, data=b"x"):
    return {"path": path, "type": "file", "mode": 0o644, "mtime_ns": 0, "size": len(data)}


HOSTILE = {
    "traversal": [_f("../evil")],
    "traversal_inside": [{"path": "d", "type": "dir", "mode": 0o755, "mtime_ns": 0},
                         _f("d/../../evil")],
    "absolute": [_f("/tmp/llmzip-evil")],
    "link_out": [{"path": "l", "type": "link", "target": "../../outside", "mode": 0o777,
                  "mtime_ns": 0}],
    "link_absolute": [{"path": "l", "type": "link", "target": "/etc", "mode": 0o777,
                       "mtime_ns": 0}],
    "link_via_dot": [{"path": "l", "type": "link", "target": ".", "mode": 0o777,
                      "mtime_ns": 0},
                     {"path": "m", "type": "link", "target": "l/../outside", "mode": 0o777,
                      "mtime_ns": 0}],
    "through_link": [{"path": "d", "type": "dir", "mode": 0o755, "mtime_ns": 0},
                     {"path": "l", "type": "link", "target": "d", "mode": 0o777,
                      "mtime_ns": 0},
                     _f("l/evil")],
    "duplicate": [_f("a"), _f("a")],
    "no_parent": [_f("d/a")],
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_directory_archives_are_refused(name, tiny_model, tiny_gguf, tmp_path):
    entries = HOSTILE[name]
    contents = {e["path"]: b"x" for e in entries if e["type"] == "file"}
    blob = _hostile(tiny_model, entries, contents)
    work = tmp_path / "work"
    work.mkdir()
    arc = work / "evil.llmz"
    arc.write_bytes(blob)
    before = sorted(os.listdir(tmp_path)), sorted(os.listdir(work))
    with pytest.raises(FormatError):
        tree.list_archive(blob)
    assert main(["decompress", str(arc), "-q", "--model", tiny_gguf]) == 2
    assert main(["list", str(arc)]) == 2
    assert (sorted(os.listdir(tmp_path)), sorted(os.listdir(work))) == before
    assert not os.path.lexists("/tmp/llmzip-evil")


def test_compressing_a_link_that_leaves_the_tree_is_refused(tmp_path, tiny_gguf):
    root = tmp_path / "t"
    root.mkdir()
    (root / "a").write_bytes(b"a")
    os.symlink("../../etc/passwd", root / "bad")
    assert main(["compress", str(root), "--model", tiny_gguf, "-q"]) == 1
    assert not (tmp_path / "t.llmz").exists()


def test_info_names_the_folder_and_workers_need_cluster(src, tmp_path, tiny_gguf, capsys):
    arc = tmp_path / "c.llmz"
    assert main(["compress", str(src), "-o", str(arc), "--model", tiny_gguf, "-q"]) == 0
    assert main(["info", str(arc)]) == 0
    assert "5 files, 10 entries" in capsys.readouterr().out
    assert main(["compress", str(src), "--workers", "2", "--model", tiny_gguf]) == 1
    assert "--workers goes with --cluster" in capsys.readouterr().err

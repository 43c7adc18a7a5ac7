"""The work layer on a real local Ray cluster (ray.init with two worker CPUs in this test
process): archives byte-identical to the single-process ones, a worker killed mid-run,
profiles checked before any work. Skipped only where Ray is not installed."""

import io
import os
import signal
import subprocess
import sys

import pytest

import llmzip
from llmzip.cli import main
from llmzip.codec import container as ct
from llmzip.errors import ClusterError
from conftest import corpus_bytes

SETTINGS = dict(batch=2, seg_len=160, fallback=False)      # many chunks of real work


def _have_ray() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


needs_ray = pytest.mark.skipif(not _have_ray(), reason="ray is not installed (pip install "
                               "'llmzip[ray]'; scripts/setup.sh installs it)")


@pytest.fixture(scope="module")
def cluster():
    from llmzip.tools.cluster import Cluster
    c = Cluster("auto", workers=2)          # an embedded local cluster with 2 CPUs
    yield c
    c.close()


@pytest.fixture(scope="module")
def text():
    return corpus_bytes("alice29.txt", 14000)


@pytest.fixture(scope="module")
def single(tiny_model, text):
    return llmzip.Compressor(tiny_model, **SETTINGS).compress(text)


class Killer:
    """on_result hook: the first time a worker has a chunk in flight, SIGKILL it."""

    def __init__(self):
        self.killed = None

    def __call__(self, i, pool):
        if self.killed is None:
            busy = pool.busy_pids()
            if busy:
                self.killed = busy[0]
                os.kill(self.killed, signal.SIGKILL)


@needs_ray
def test_compress_with_a_worker_killed_equals_single_process(cluster, tiny_model, text,
                                                             single, tmp_path):
    from llmzip.tools.cluster import compress_to
    assert len(ct.scan(single).chunks) >= 6
    kill = Killer()
    out = io.BytesIO()
    st, ps = compress_to(cluster, text, out, tiny_model, on_result=kill, workers=2,
                         in_flight=6, **SETTINGS)
    assert kill.killed is not None
    assert ps.retries >= 1 and ps.replaced == 1
    assert out.getvalue() == single                    # byte for byte
    n_chunks = len(ct.scan(single).chunks)
    assert st.output_bytes == len(single) and st.chunks == {"model": n_chunks}
    assert ps.chunks == n_chunks and len(ps.setup_seconds) == 3   # 2 workers + 1 fresh
    # the cluster's archive decodes in one process where Ray cannot even be imported
    arc, orig = tmp_path / "c.llmz", tmp_path / "orig"
    arc.write_bytes(out.getvalue())
    orig.write_bytes(text)
    code = ("import sys; sys.modules['ray'] = None\n"
            "import llmzip\n"
            f"data = llmzip.decompress(open({str(arc)!r}, 'rb').read(), "
            f"model={tiny_model.path!r})\n"
            f"assert data == open({str(orig)!r}, 'rb').read()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr


@needs_ray
def test_decompress_on_the_cluster_with_a_worker_killed(cluster, tiny_model, text, single):
    from llmzip.tools.cluster import decompress_to
    kill = Killer()
    out = io.BytesIO()
    n, ps = decompress_to(cluster, io.BytesIO(single), out, tiny_model.path, on_result=kill,
                          workers=2, in_flight=6)
    assert kill.killed is not None and ps.retries >= 1
    assert n == len(text) and out.getvalue() == text


@needs_ray
def test_mixed_input_with_fallback_equals_single_process(cluster, tiny_model, tiny_gguf,
                                                         monkeypatch):
    from llmzip.codec import api
    from llmzip.tools.cluster import compress_to
    monkeypatch.setattr(api, "PLAN_PIECE", 5000)      # text planned in pieces too
    data = (corpus_bytes("alice29.txt", 9000) + os.urandom(9000)
            + corpus_bytes("alice29.txt", 20000)[11000:])
    for kw in (dict(batch=2, seg_len=300), dict(batch=2, seg_len=300, fallback=False)):
        want = llmzip.Compressor(tiny_gguf, **kw).compress(data)
        out = io.BytesIO()
        compress_to(cluster, data, out, tiny_gguf, workers=2, **kw)
        assert out.getvalue() == want
    methods = {c.method_name for c in ct.scan(want).chunks}
    assert "model" in methods and len(methods) >= 2


@needs_ray
def test_a_worker_with_another_model_is_refused_before_any_work(cluster, tiny_model, tmp_path):
    from llmzip.engine.models.tiny import write_tiny_gguf
    from llmzip.tools.cluster import Pool
    other = write_tiny_gguf(str(tmp_path / "other.gguf"), seed=1)
    comp = llmzip.Compressor(tiny_model, threads=1, **SETTINGS)
    expect = {"profile": comp.engine_profile(), "fingerprint": comp.model.fingerprint}
    with pytest.raises(ClusterError, match="another engine fingerprint"):
        Pool(cluster, "compress", other, dict(threads=1, **SETTINGS), expect=expect, n=1)
    changed = dict(expect, profile=dict(expect["profile"], seg_len=999))
    with pytest.raises(ClusterError, match="seg_len=160"):
        Pool(cluster, "compress", tiny_model.path, dict(threads=1, **SETTINGS),
             expect=changed, n=1)


@needs_ray
def test_cli_on_the_cluster(cluster, tiny_model, text, single, tmp_path, capsys):
    """--cluster through the command line (this process's Ray connection is reused)."""
    src = tmp_path / "alice.txt"
    src.write_bytes(text)
    arc = tmp_path / "alice.txt.llmz"
    args = ["--model", tiny_model.path, "--batch", "2", "--seg-len", "160", "--no-fallback"]
    assert main(["compress", str(src), "--cluster", "auto", "--workers", "2", "-v",
                 "--verify", *args]) == 0
    # the model was named by its path here, by the LoadedModel in `single`: same file
    assert ct.scan(arc.read_bytes()).chunks == ct.scan(single).chunks
    assert "2 workers" in capsys.readouterr().err
    back = tmp_path / "back.txt"
    assert main(["decompress", str(arc), "--cluster", "auto", "-o", str(back), "-q",
                 "--model", tiny_model.path]) == 0
    assert back.read_bytes() == text
    bad = bytearray(arc.read_bytes())
    c = ct.scan(bytes(bad)).chunks[2]
    bad[c.offset + 3] ^= 1
    arc.write_bytes(bytes(bad))
    out = tmp_path / "never.txt"
    assert main(["decompress", str(arc), "--cluster", "auto", "-o", str(out), "-q",
                 "--model", tiny_model.path]) == 2
    assert not out.exists()


def test_archive_from_the_cluster_decodes_without_ray(tiny_gguf, tmp_path):
    """Without Ray, archives still decode (test_compress_with_a_worker_killed... decodes
    the cluster's own archive so), and --cluster says how to install it (exit code 1)."""
    data = corpus_bytes("alice29.txt", 3000)
    arc = tmp_path / "a.llmz"
    arc.write_bytes(llmzip.compress(data, model=tiny_gguf, **SETTINGS))
    code = ("import sys; sys.modules['ray'] = None\n"
            "import llmzip\n"
            f"data = llmzip.decompress(open({str(arc)!r}, 'rb').read(), model={tiny_gguf!r})\n"
            f"assert data == open({corpus_path()!r}, 'rb').read(3000)\n"
            "from llmzip.cli import main\n"
            f"sys.exit(main(['compress', {str(arc)!r}, '--cluster', 'auto', '-o', "
            f"{str(tmp_path / 'x')!r}]))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1, r.stderr
    assert "pip install 'llmzip[ray]'" in r.stderr
    assert not (tmp_path / "x").exists()


def corpus_path():
    from conftest import corpus_file
    return corpus_file("alice29.txt")


@needs_ray
def test_float_engine_on_the_cluster_equals_single_process(cluster, tiny_model):
    """The float engine's tables depend on the machine: on one machine, with the workers'
    thread count, the cluster's archive is still the single-process one."""
    from llmzip.tools.cluster import compress_to
    data = corpus_bytes("alice29.txt", 4000)
    kw = dict(engine="float", attention="torch-f32", dtype="float32", threads=1, **SETTINGS)
    want = llmzip.Compressor(tiny_model, **kw).compress(data)
    out = io.BytesIO()
    compress_to(cluster, data, out, tiny_model, workers=2, **kw)
    assert out.getvalue() == want
    assert llmzip.decompress(want, model=tiny_model) == data


@needs_ray
def test_directory_archive_on_the_cluster(cluster, tiny_model, tmp_path):
    from llmzip.codec.tree import TreeJob
    from llmzip.tools.cluster import compress_to
    root = tmp_path / "d"
    (root / "s").mkdir(parents=True)
    (root / "a.txt").write_bytes(corpus_bytes("alice29.txt", 3000))
    (root / "s" / "b.txt").write_bytes(corpus_bytes("alice29.txt", 5000)[3000:])
    want = llmzip.Compressor(tiny_model, **SETTINGS).compress_tree(str(root))
    out = io.BytesIO()
    compress_to(cluster, b"", out, tiny_model, workers=2, tree=TreeJob(str(root)),
                **SETTINGS)
    assert out.getvalue() == want
    arc = tmp_path / "d.llmz"
    arc.write_bytes(want)
    back = tmp_path / "back"
    assert main(["decompress", str(arc), "-o", str(back), "--cluster", "auto", "-q",
                 "--model", tiny_model.path]) == 0
    assert (back / "s" / "b.txt").read_bytes() == (root / "s" / "b.txt").read_bytes()


@needs_ray
def test_bench_cluster_small(tiny_gguf):
    from llmzip.tools.clusterbench import bench_cluster, format_bench
    res = bench_cluster(corpus_bytes("alice29.txt", 3000), model=tiny_gguf, workers=(1, 2),
                        batch=2, seg_len=200, fallback=False)
    assert [r["workers"] for r in res["rows"]] == [1, 1, 2]
    assert all(r["compress_Bps"] > 0 and r["decompress_Bps"] > 0 for r in res["rows"])
    assert [p["workers"] for p in res["projection"]] == [1, 8, 64, 512]
    assert "512 workers" in format_bench(res)


def test_projection_arithmetic():
    from llmzip.tools.clusterbench import project
    rows = project(rate_c=1000.0, rate_d=500.0, load=10.0, plan_rate=1e7,
                   bytes_per_token=4.0, moved_c=1.2, moved_d=1.2, corpus=10 ** 9,
                   link=1.25e9, workers=(1, 8, 2000))
    n = -(-10 ** 9 // (64 * 2048 * 4))                  # 1,908 chunks of 524,288 bytes
    assert rows[0]["chunks"] == n == 1908
    chunk = 64 * 2048 * 4
    assert rows[0]["compress_s"] == pytest.approx(10 + n * chunk / 1000 + 1.2 / 1.25)
    assert rows[1]["waves"] == 239 and "tail" in rows[1]["limit"]
    assert rows[2]["waves"] == 1 and "idle" in rows[2]["limit"]
    assert rows[1]["decompress_s"] == pytest.approx(10 + 239 * chunk / 500 + 1.2 / 1.25)


@needs_ray
def test_eval_on_the_cluster_matches_local(cluster, tiny_gguf, tmp_path, capsys):
    import json
    files = []
    for i, n in enumerate((1500, 2500, 800)):
        p = tmp_path / f"f{i}.txt"
        p.write_bytes(corpus_bytes("alice29.txt", 3000)[i * 100:i * 100 + n])
        files.append(str(p))
    rows = {}
    for how in ("local", "cluster"):
        out = tmp_path / f"{how}.jsonl"
        extra = ["--cluster", "auto", "--workers", "2"] if how == "cluster" else []
        assert main(["eval", *files, "--model", tiny_gguf, "--context", "256",
                     "--json", str(out), *extra]) == 0
        rows[how] = [json.loads(line) for line in out.read_text().splitlines()]
    capsys.readouterr()
    assert [r["file"] for r in rows["cluster"]] == ["f0.txt", "f1.txt", "f2.txt"]
    for a, b in zip(rows["local"], rows["cluster"]):
        assert a["tokens"] == b["tokens"] and a["bits"] == pytest.approx(b["bits"], rel=1e-5)


@needs_ray
def test_driver_killed_leaves_no_file_under_the_final_name(tiny_gguf, tmp_path):
    """SIGKILL of the driver mid-run (its own embedded cluster, --cluster auto): no file
    under the final name; the Ray processes it started go with it."""
    import time
    src = tmp_path / "in.txt"
    src.write_bytes(corpus_bytes("alice29.txt", 40000))
    out = tmp_path / "out.llmz"
    p = subprocess.Popen([sys.executable, "-m", "llmzip", "compress", str(src), "-o", str(out),
                          "--cluster", "auto", "--workers", "1", "--model", tiny_gguf,
                          "--batch", "2", "--seg-len", "100", "--no-fallback", "-q"],
                         start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None and not any(
                n.endswith(".llmz-tmp") for n in os.listdir(tmp_path)):
            time.sleep(0.1)
        time.sleep(4)                      # Ray up, the worker coding
        assert p.poll() is None, "finished before it could be killed"
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        assert not out.exists()
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)   # whatever of its session is left
        except ProcessLookupError:
            pass


@needs_ray
def test_join_a_cluster_started_with_ray_start(tiny_gguf, tmp_path):
    """`ray start --head` on 127.0.0.1 (its own processes, as on a real head node), then
    `llmzip compress --cluster 127.0.0.1:PORT`: the single-process archive."""
    import socket
    import time
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(llmzip.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    head = subprocess.Popen([ray_cli, "start", "--head", "--block", f"--port={port}",
                             "--node-ip-address=127.0.0.1", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None, "ray start --head failed"
                time.sleep(0.5)
        data = corpus_bytes("alice29.txt", 6000)
        src = tmp_path / "in.txt"
        src.write_bytes(data)
        arc = tmp_path / "in.llmz"
        r = subprocess.run([sys.executable, "-m", "llmzip", "compress", str(src), "-o", str(arc),
                            "--cluster", f"127.0.0.1:{port}", "--workers", "2", "--model",
                            tiny_gguf, "--batch", "2", "--seg-len", "160", "--no-fallback"],
                           env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert "on 2 workers" in r.stderr
        want = llmzip.Compressor(tiny_gguf, **SETTINGS).compress(data)
        assert arc.read_bytes() == want
    finally:
        head.send_signal(signal.SIGTERM)       # --block: stops the node's processes
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

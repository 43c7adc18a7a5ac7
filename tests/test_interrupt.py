"""Killing llmzip mid-run leaves no file under the final name and the input untouched."""

import os
import signal
import subprocess
import sys
import time

import pytest

import llmzip
from conftest import corpus_bytes


def _default_sigint():
    """In the child: SIGINT back to its default. A shell that runs pytest in the background
    (`cmd &` without job control) starts it with SIGINT ignored, the child inherits that,
    and Python then never installs its KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args, cwd):
    env = dict(os.environ, LLMZIP_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "llmzip", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_running(proc, cpu_seconds):
    """Wait until the process has spent `cpu_seconds` of CPU (past start-up, into the
    model work), however busy the machine is."""
    deadline = time.time() + 120
    while _cpu_seconds(proc.pid) < cpu_seconds:
        assert proc.poll() is None, "finished before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be interrupted"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupt_compress(tiny_gguf, tmp_path, sig):
    src = tmp_path / "big.txt"
    data = corpus_bytes("lcet10.txt")
    src.write_bytes(data)
    p = _start(["compress", str(src), "--model", tiny_gguf, "--no-fallback", "--batch", "2",
                "--seg-len", "500", "-q"], tmp_path)
    _wait_running(p, 3.0)
    p.send_signal(sig)
    p.wait(timeout=60)
    assert p.returncode != 0
    assert not (tmp_path / "big.txt.llmz").exists()
    assert src.read_bytes() == data
    if sig != signal.SIGKILL:                       # cleanup ran: no temporary file left
        assert sorted(os.listdir(tmp_path)) == ["big.txt"]
        assert b"Traceback" not in p.stderr.read()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupt_decompress(tiny_model, tiny_gguf, tmp_path, sig):
    data = corpus_bytes("lcet10.txt", 24000)
    arc = tmp_path / "big.txt.llmz"
    arc.write_bytes(llmzip.compress(data, model=tiny_model, batch=1, seg_len=500,
                                    fallback=False))
    blob = arc.read_bytes()
    p = _start(["decompress", str(arc), "--model", tiny_gguf, "-q"], tmp_path)
    _wait_running(p, 2.5)
    p.send_signal(sig)
    p.wait(timeout=60)
    assert p.returncode != 0
    assert not (tmp_path / "big.txt").exists()
    assert arc.read_bytes() == blob

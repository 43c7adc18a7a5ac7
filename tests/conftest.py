import os
import tempfile

import pytest

# hermetic: weight caches go to a fresh folder, torch runs on one thread unless a test says
_CACHE_DIR = tempfile.mkdtemp(prefix="llmzip-test-cache-")
os.environ["LLMZIP_CACHE"] = _CACHE_DIR


def pytest_sessionfinish(session, exitstatus):
    import shutil
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)       # assembled GGUFs, weight caches
os.environ.setdefault("LLMZIP_THREADS", "1")

CORPUS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus")


def corpus_file(name: str) -> str:
    path = os.path.abspath(os.path.join(CORPUS, name))
    if not os.path.exists(path):
        pytest.fail(f"test corpus file {path} is missing (expected ../shared/corpus/)")
    return path


def corpus_bytes(name: str, n: int | None = None) -> bytes:
    with open(corpus_file(name), "rb") as f:
        return f.read() if n is None else f.read(n)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> str:
    from llmzip.engine.models.tiny import write_tiny_gguf
    return write_tiny_gguf(str(tmp_path_factory.mktemp("models") / "tiny.gguf"), seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_gguf):
    from llmzip.engine.models.registry import load_model
    return load_model(tiny_gguf)


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory):
    """A tiny random Gemma 3 (sliding and global layers, post-norms, GELU)."""
    from llmzip.engine.models.registry import load_model
    from llmzip.engine.models.tiny import write_tiny_gemma_gguf
    path = tmp_path_factory.mktemp("gemma") / "tiny-gemma.gguf"
    return load_model(write_tiny_gemma_gguf(str(path), seed=3))


@pytest.fixture(scope="session")
def default_model():
    from llmzip.engine.models.registry import load_model
    return load_model(None)

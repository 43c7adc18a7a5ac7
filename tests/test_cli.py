"""The command line, called in-process through llmzip.cli.main."""

import argparse
import io
import os
import re
import subprocess
import sys

import pytest

from llmzip.cli import main
from llmzip.codec import container as ct
from conftest import corpus_bytes


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "sample.txt"
    p.write_bytes(corpus_bytes("alice29.txt", 3000))
    return p


def _args(tiny_gguf, *extra):
    return [*extra, "--model", tiny_gguf, "--batch", "4", "--seg-len", "128", "-q"]


def test_compress_decompress_subcommands(tiny_gguf, text_file, tmp_path):
    arc = tmp_path / "out.llmz"
    assert main(_args(tiny_gguf, "compress", str(text_file), "-o", str(arc))) == 0
    assert arc.read_bytes()[:8] == ct.MAGIC
    back = tmp_path / "back.txt"
    assert main(_args(tiny_gguf, "decompress", str(arc), "-o", str(back))) == 0
    assert back.read_bytes() == text_file.read_bytes()
    assert text_file.exists()                       # input kept by default


def test_short_form_and_suffixes(tiny_gguf, text_file):
    assert main(_args(tiny_gguf, str(text_file))) == 0
    arc = str(text_file) + ".llmz"
    assert os.path.exists(arc)
    original = text_file.read_bytes()
    text_file.unlink()
    assert main(_args(tiny_gguf, "-d", arc)) == 0
    assert text_file.read_bytes() == original


def test_refuses_overwrite_without_force(tiny_gguf, text_file):
    arc = str(text_file) + ".llmz"
    open(arc, "wb").write(b"precious")
    assert main(_args(tiny_gguf, str(text_file))) == 1
    assert open(arc, "rb").read() == b"precious"
    assert main(_args(tiny_gguf, "-f", str(text_file))) == 0
    assert open(arc, "rb").read()[:8] == ct.MAGIC


def test_rm_removes_input_only_when_asked(tiny_gguf, text_file):
    assert main(_args(tiny_gguf, "--rm", str(text_file))) == 0
    assert not text_file.exists()


def test_test_flag(tiny_gguf, text_file, capsys):
    main(_args(tiny_gguf, str(text_file)))
    arc = str(text_file) + ".llmz"
    assert main(["-t", arc, "--model", tiny_gguf]) == 0
    assert "OK" in capsys.readouterr().err


def test_corrupt_archive_exit_2_no_output(tiny_gguf, text_file, tmp_path):
    main(_args(tiny_gguf, str(text_file)))
    arc = tmp_path / "sample.txt.llmz"
    blob = bytearray(arc.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    bad = tmp_path / "bad.txt.llmz"
    bad.write_bytes(bytes(blob))
    assert main(["-d", str(bad), "--model", tiny_gguf, "-q"]) == 2
    assert not (tmp_path / "bad.txt").exists()
    trunc = tmp_path / "trunc.txt.llmz"
    trunc.write_bytes(arc.read_bytes()[:-7])
    assert main(["decompress", str(trunc), "--model", tiny_gguf, "-q"]) == 2
    assert not (tmp_path / "trunc.txt").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".llmz-tmp")]


def test_not_an_archive_exit_2(tmp_path):
    p = tmp_path / "x.llmz"
    p.write_bytes(b"hello")
    assert main(["-d", str(p), "-q"]) == 2


def test_missing_input_exit_1(tmp_path):
    assert main(["compress", str(tmp_path / "nope"), "-q"]) == 1


def test_unknown_suffix(tiny_gguf, text_file, tmp_path):
    main(_args(tiny_gguf, str(text_file)))
    renamed = tmp_path / "archive.bin"
    os.rename(str(text_file) + ".llmz", renamed)
    assert main(["-d", str(renamed), "--model", tiny_gguf, "-q"]) == 1


class _Std:
    def __init__(self, data=b"", tty=False):
        self.buffer = io.BytesIO(data)
        self._tty = tty

    def isatty(self):
        return self._tty


def test_stdin_to_stdout_both_ways(tiny_gguf, monkeypatch):
    data = b"piped text through llmzip " * 40
    monkeypatch.setattr(sys, "stdin", _Std(data))
    out = _Std()
    monkeypatch.setattr(sys, "stdout", out)
    assert main(_args(tiny_gguf, "-c", "-")) == 0
    blob = out.buffer.getvalue()
    monkeypatch.setattr(sys, "stdin", _Std(blob))
    out2 = _Std()
    monkeypatch.setattr(sys, "stdout", out2)
    assert main(["-d", "-c", "-", "--model", tiny_gguf, "-q"]) == 0
    assert out2.buffer.getvalue() == data


def test_refuses_compressed_data_to_terminal(tiny_gguf, text_file, monkeypatch):
    monkeypatch.setattr(sys, "stdout", _Std(tty=True))
    assert main(_args(tiny_gguf, "-c", str(text_file))) == 1


def test_info(tiny_gguf, text_file, capsys):
    main(_args(tiny_gguf, str(text_file)))
    capsys.readouterr()
    assert main(["info", str(text_file) + ".llmz"]) == 0
    out = capsys.readouterr().out
    assert "original" in out and "bits/byte" in out
    assert main(["info", "--json", str(text_file) + ".llmz"]) == 0
    import json
    info = json.loads(capsys.readouterr().out)
    assert info["original_bytes"] == 3000


def test_preserves_mode_and_mtime(tiny_gguf, text_file):
    os.chmod(text_file, 0o640)
    os.utime(text_file, (1_000_000_000, 1_000_000_000))
    main(_args(tiny_gguf, str(text_file)))
    st = os.stat(str(text_file) + ".llmz")
    assert st.st_mode & 0o777 == 0o640
    assert int(st.st_mtime) == 1_000_000_000


def test_python_dash_m(tiny_gguf, text_file):
    import subprocess
    r = subprocess.run([sys.executable, "-m", "llmzip", "info", "/nonexistent.llmz"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "cannot read" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("attention", ["torch-f32", "bf16-kernel"])
def test_attention_option_recorded_and_shown(tiny_gguf, text_file, capsys, attention):
    arc = str(text_file) + ".llmz"
    assert main(_args(tiny_gguf, "compress", str(text_file), "--engine", "float",
                      "--attention", attention,
                      "--no-fallback")) == 0
    assert ct.scan(open(arc, "rb").read()).header["engine"]["attention"] == attention
    assert main(["info", arc]) == 0
    assert f"attention {attention}" in capsys.readouterr().out
    assert main(_args(tiny_gguf, "decompress", arc, "-t")) == 0


def test_attention_choices_match_engine():
    """llmzip/cli/parser.py writes the names out (so the CLI starts without torch); they must be the
    engine's."""
    import argparse
    from llmzip.cli import _common
    from llmzip.engine.float_engine import ATTENTIONS
    p = argparse.ArgumentParser()
    _common(p)
    action = next(a for a in p._actions if a.dest == "attention")
    assert action.choices[0] == "auto"
    assert sorted(action.choices[1:]) == sorted(ATTENTIONS)


def test_kernel_choices_match_engine():
    import argparse
    from llmzip.cli import _common
    from llmzip.engine.exact import KERNELS
    p = argparse.ArgumentParser()
    _common(p)
    assert tuple(next(a for a in p._actions if a.dest == "kernel").choices) == KERNELS


def test_exact_engine_shown_and_cuda_refused(tiny_gguf, text_file, capsys):
    arc = str(text_file) + ".llmz"
    assert main(_args(tiny_gguf, "compress", str(text_file), "--no-fallback",
                      "--kernel", "portable")) == 0
    assert main(["info", arc]) == 0
    assert "exact (integer arithmetic version 1" in capsys.readouterr().out
    assert main(_args(tiny_gguf, "decompress", arc, "-t", "--kernel", "reference")) == 0
    assert main(_args(tiny_gguf, "decompress", arc, "-t", "--device", "cuda")) == 1
    assert "not been tested" in capsys.readouterr().err


def test_cli_imports_without_torch():
    """`llmzip --help` and argument errors stay fast: torch loads on first real use."""
    import subprocess
    r = subprocess.run([sys.executable, "-c", "import sys, llmzip.cli; "
                        "print('torch' in sys.modules)"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_top_level_help_lists_the_subcommands(flag, capsys):
    """`llmzip --help` shows every subcommand with its one-line help (the one
    `llmzip COMMAND -h` is listed under) next to the gzip-style options."""
    from llmzip.cli import COMMANDS, SUBCOMMANDS, build_parser
    with pytest.raises(SystemExit) as e:
        main([flag])
    assert e.value.code == 0
    out = capsys.readouterr().out
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(sub.choices) == sorted(SUBCOMMANDS) == sorted(COMMANDS)
    helps = {a.dest: a.help for a in sub._choices_actions}
    for cmd in SUBCOMMANDS:
        assert re.search(rf"^  {cmd} +{re.escape(helps[cmd])}$", out, re.M), cmd
    for option in ("--decompress", "--test", "--stdout", "--output", "--model", "--force"):
        assert option in out


def test_help_from_the_command_line_and_short_forms_still_parse():
    """The installed entry point prints the same page; the gzip-style forms still parse."""
    from llmzip.cli import build_short_parser
    r = subprocess.run([sys.executable, "-m", "llmzip", "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and re.search(r"^  scale +\S", r.stdout, re.M), r.stderr
    p = build_short_parser()
    a = p.parse_args(["f.txt"])
    assert a.files == ["f.txt"] and not a.decompress and not a.test and not a.stdout
    a = p.parse_args(["-d", "f.txt.llmz", "-c"])
    assert a.files == ["f.txt.llmz"] and a.decompress and a.stdout
    a = p.parse_args(["-t", "a.llmz", "b.llmz"])
    assert a.files == ["a.llmz", "b.llmz"] and a.test
    assert p.parse_args([]).files == ["-"]

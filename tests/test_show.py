"""llmzip show: the per-token surprise page (HTML + JSON), checked as text and in Chromium."""

import io
import json
import os
import re
import subprocess
import tempfile

import numpy as np
import pytest

import llmzip
from llmzip.codec.tokenizer import tokenizer_for
from llmzip.tools import show

CHROMIUM = "/usr/bin/chromium"

HOSTILE = (b"Hi <script>document.body.setAttribute('data-pwned','1')</script> & "
           b"<img src=x onerror=\"document.body.setAttribute('data-pwned','2')\"> "
           b"</span></div><!-- \"quotes\" 'single' \xe2\x80\xae rtl \xe4\xb8\xad\xe6\x96\x87 "
           b"caf\xc3\xa9\n\n\tend\x00\x04\xc0\xff\xe4\xb8 http://example.com/x.png")


HOSTILE_PIECES = [b"<script>document.body.setAttribute('data-pwned','3')</script>",
                  b"<img src=x onerror=\"document.body.setAttribute('data-pwned','4')\">",
                  b"<!--", b"</div></span>", b"&amp;&lt;", b"]]></script><script>"]


@pytest.fixture(scope="module")
def hostile_page(tiny_model, tmp_path_factory):
    res = show.surprise(tiny_model, HOSTILE, context=32, name="<b>x</b>.txt")
    # the tiny vocabulary splits markup into small tokens; real vocabularies have tokens
    # like "</" or "<!--", so also give whole hostile pieces to some tokens and ids
    for j, piece in enumerate(HOSTILE_PIECES):
        res["pieces_hex"][j] = piece.hex()
        res["vocab_hex"][str(res["ids"][j])] = piece.hex()
        res["vocab_hex"][str(res["top"][j][0][0])] = piece.hex()
    path = str(tmp_path_factory.mktemp("show") / "page.html")
    show.write_page(path, res)
    return path, res


def test_surprise_matches_token_bits(tiny_model):
    from llmzip.engine.score import token_bits
    data = b"the cat sat on the mat, and then the other cat sat there too. " * 6
    res = show.surprise(tiny_model, data, context=40, top_k=5)
    ids = np.asarray(res["ids"])
    assert res["tokens"] == len(ids) > 39                   # several chunks
    assert np.array_equal(ids, tokenizer_for(tiny_model).encode(data))
    want = token_bits(tiny_model, ids, context=40)
    assert np.allclose(res["bits"], want, atol=1e-5)
    assert res["bits_total"] == pytest.approx(want.sum(), abs=1e-3)
    assert res["bits_per_byte"] == pytest.approx(want.sum() / len(data), abs=1e-6)
    assert b"".join(bytes.fromhex(h) for h in res["pieces_hex"]) == data
    for t, b, r, top in zip(res["ids"], res["bits"], res["rank"], res["top"]):
        assert len(top) == 5
        ps = [p for _, p in top]
        assert ps == sorted(ps, reverse=True) and 0 < sum(ps) <= 1.0001
        if r <= 5:      # the token itself is among the alternatives, with its probability
            p = dict(top)[t]
            assert p == pytest.approx(2.0 ** -b, rel=1e-3)
        else:
            assert 2.0 ** -b <= ps[-1] * 1.0001
    for _, base in res["baselines"].items():
        assert base["bytes"] > 0 and base["bits_per_byte"] > 0


def test_escape_and_byte_pieces(tiny_model):
    # tiny model lacks byte tokens for 0xC0, 0xFF, 0x04: they go as ESC + byte token
    data = b"a\xc0b\xff\x04\xe4\xb8\xad"
    res = show.surprise(tiny_model, data, context=16)
    esc = res["escape_id"]
    assert esc >= 0 and res["ids"].count(esc) == 3
    pieces = [bytes.fromhex(h) for h in res["pieces_hex"]]
    assert b"".join(pieces) == data
    assert all(p == b"" for t, p in zip(res["ids"], pieces) if t == esc)
    page = show.render_html(res)
    assert page.count('<span class="hx">ESC</span>') == 4      # 3 tokens + the help text
    assert "\\xc0" in page and "\\xff" in page


ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "b",
                "br", "small", "code", "div", "span", "table", "tr", "th", "td", "svg",
                "desc", "line", "text", "rect", "footer", "script"}


def _tags(page: str) -> list:
    from html.parser import HTMLParser

    class P(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.tags = []

        def handle_starttag(self, tag, attrs):
            self.tags.append((tag, attrs))

    p = P()
    p.feed(page)
    return p.tags


def test_page_self_contained_and_escaped(hostile_page):
    path, res = hostile_page
    page = open(path, encoding="utf-8").read()
    # one <script> for the data, one for the code, and nothing from the input
    assert len(re.findall(r"<script\b", page, re.I)) == 2
    assert "<img" not in page.lower()
    assert "&lt;script&gt;document.body.setAttribute(" in page         # a whole piece
    assert "&lt;!--" in page and "&lt;/div&gt;&lt;/span&gt;" in page
    assert "&amp;amp;&amp;lt;" in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    # self-contained: no element refers to anything outside the page
    tags = _tags(page)
    assert {t for t, _ in tags} <= ALLOWED_TAGS, {t for t, _ in tags} - ALLOWED_TAGS
    for t, attrs in tags:
        for k, v in attrs:
            assert k not in ("src", "href", "xlink:href", "srcset", "action", "data",
                             "background", "poster") and not k.startswith("on"), (t, k, v)
    css = "".join(re.findall(r"<style>(.*?)</style>", page, re.S))
    assert "url(" not in css and "@import" not in css
    # the JSON inside the page cannot close its <script> element
    data = page.split('id="tok-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and ">" not in data
    assert json.loads(data)["ids"] == res["ids"]
    # tokens: one span each, in order, covering the input
    assert len(re.findall(r'<span class="tok c\d+">', page)) == res["tokens"]
    assert '<svg id="hist"' in page and 'id="legend"' in page


def test_json_next_to_page(hostile_page):
    path, res = hostile_page
    jpath = os.path.splitext(path)[0] + ".json"
    d = json.load(open(jpath))
    assert d["format"] == show.FORMAT
    n = d["tokens"]
    assert len(d["ids"]) == len(d["bits"]) == len(d["pieces_hex"]) == len(d["top"]) == n
    assert set(d["baselines"]) == {"xz-9e", "zstd-19"}
    assert all(str(a) in d["vocab_hex"] for t in d["top"] for a, _ in t)
    # the page can be made again from the JSON alone
    assert show.render_html(d) == open(path, encoding="utf-8").read()


def test_max_tokens_cap_and_note(tiny_model, tmp_path):
    data = b"one two three four five six seven eight nine ten " * 20
    res = show.surprise(tiny_model, data, context=64, max_tokens=50)
    assert res["tokens"] == 50 and res["truncated"]
    assert res["bytes"] < len(data) and res["input_bytes"] == len(data)
    assert data.startswith(b"".join(bytes.fromhex(h) for h in res["pieces_hex"]))
    page = show.render_html(res)
    assert 'id="truncated"' in page and "--max-tokens 50" in page
    full = show.surprise(tiny_model, data, context=64, max_tokens=None)
    assert not full["truncated"] and full["tokens"] > 50
    assert 'id="truncated"' not in show.render_html(full)


def test_no_urls_in_a_plain_page(tiny_model):
    page = show.render_html(show.surprise(tiny_model, b"plain text, nothing else\n"))
    assert "http://" not in page and "https://" not in page
    assert "<script src" not in page and "<link" not in page


def test_empty_input(tiny_model):
    res = show.surprise(tiny_model, b"")
    assert res["tokens"] == 0 and res["bits_per_byte"] is None
    page = show.render_html(res)
    assert '<svg id="hist"' in page and 'id="empty"' in page


def test_segments():
    S = show.byte_segments
    assert S(b"abc") == [(0, "abc")]
    assert S(b"\xe4\xb8") == [(1, "\\xe4\\xb8")]
    assert S(b"a\nb") == [(0, "a"), (2, "\n"), (0, "b")]
    assert S("x\u202ey".encode()) == [(0, "x"), (1, "\\u202e"), (0, "y")]
    assert S(b"\x00\x01\r\n") == [(1, "\\x00\\x01"), (3, "\r"), (2, "\n")]
    assert show.level(0) == 0 and show.level(float("nan")) == 0
    assert show.level(100) == len(show.COLOURS) - 1
    assert show.json_path("a/page.html") == "a/page.json"
    assert show.json_path("a/page") == "a/page.json"


def test_main_cli(tiny_gguf, tmp_path, capsys, monkeypatch):
    src = tmp_path / "in.txt"
    src.write_bytes(b"hello world, hello again\n")
    out = tmp_path / "o.html"
    assert show.main([str(src), "--model", tiny_gguf, "-o", str(out), "--max-tokens", "4",
                      "--context", "16", "--threads", "1"]) == 0
    assert out.exists() and (tmp_path / "o.json").exists()
    assert json.load(open(tmp_path / "o.json"))["tokens"] == 4
    assert "capped" in capsys.readouterr().err
    assert show.main([str(tmp_path / "missing"), "--model", tiny_gguf]) == 1
    capsys.readouterr()
    arc = tmp_path / "in.txt.llmz"                # an archive is not a text to show
    arc.write_bytes(llmzip.compress(src.read_bytes(), model=tiny_gguf))
    assert show.main([str(arc), "--model", tiny_gguf]) == 1
    assert "llmzip info" in capsys.readouterr().err
    assert not (tmp_path / "in.txt.llmz.html").exists()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(arc.read_bytes())))
    page = tmp_path / "stdin.html"                   # the same on stdin
    assert show.main(["-", "--model", tiny_gguf, "-o", str(page)]) == 1
    assert "the input on stdin is an llmzip archive" in capsys.readouterr().err
    assert not page.exists()


# -------------------------------------------------------------------------- in a browser

def _chromium(url: str, *extra: str, timeout: int = 90) -> subprocess.CompletedProcess:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; scripts/ci_apt.sh)")
    with tempfile.TemporaryDirectory(prefix="llmzip-chromium-") as profile:
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-extensions",
               f"--user-data-dir={profile}", *extra, url]
        return subprocess.run(cmd, capture_output=True, timeout=timeout)


PROBE = r"""<script>
(function () {
  var toks = document.querySelectorAll("#text .tok"), tip = document.getElementById("tip");
  var out = {tokens: toks.length, scripts: document.scripts.length,
             tabstops: document.querySelectorAll('#text .tok[tabindex="0"]').length,
             focusable: document.querySelectorAll('#text .tok[tabindex="-1"]').length,
             hidden_before: tip.hidden};
  toks[2].focus();
  out.focus = {hidden: tip.hidden, text: tip.textContent,
               rows: tip.querySelectorAll("tr").length,
               active_is_tok: document.activeElement === toks[2],
               page_had_focus: document.hasFocus()};
  toks[2].dispatchEvent(new KeyboardEvent("keydown", {key: "ArrowRight", bubbles: true}));
  out.arrow = {active: Array.prototype.indexOf.call(toks, document.activeElement),
               tabstops: document.querySelectorAll('#text .tok[tabindex="0"]').length,
               text: tip.textContent};
  toks[5].dispatchEvent(new MouseEvent("mouseover", {bubbles: true}));
  out.hover = {hidden: tip.hidden, text: tip.textContent};
  toks[5].dispatchEvent(new KeyboardEvent("keydown", {key: "Escape", bubbles: true}));
  out.escape_hidden = tip.hidden;
  toks[0].dispatchEvent(new MouseEvent("mouseover", {bubbles: true}));
  out.tip0 = {text: tip.textContent, elements: tip.querySelectorAll("img,script").length};
  out.text = document.getElementById("text").textContent;
  out.hist_bars = document.querySelectorAll("#hist rect.bar").length;
  var pre = document.createElement("pre");
  pre.id = "probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script></body>"""


def test_browser_dom(hostile_page):
    path, res = hostile_page
    r = _chromium("file://" + os.path.abspath(path), "--dump-dom")
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    dom = r.stdout.decode("utf-8")
    assert len(re.findall(r'<span class="tok c\d+"', dom)) == res["tokens"]
    assert '<svg id="hist"' in dom and "<rect" in dom
    assert not re.search(r"<body[^>]*data-pwned", dom)          # nothing from the input ran
    assert len(re.findall(r"<script\b", dom)) == 2
    assert len(re.findall(r"<img\b", dom)) == 0


def test_browser_tooltip_and_keyboard(hostile_page, tmp_path):
    path, res = hostile_page
    page = open(path, encoding="utf-8").read()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE, 1), encoding="utf-8")
    import html as html_mod
    # Headless Chromium on a loaded machine sometimes loads the page without giving it
    # focus; then element.focus() moves activeElement but fires no focusin, which no
    # user can meet (focusing a token focuses its window). Load again, up to 3 times,
    # until the page had focus; every assertion below still holds as it is.
    for _ in range(3):
        r = _chromium("file://" + str(probe), "--dump-dom")
        assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
        dom = r.stdout.decode("utf-8")
        m = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
        assert m, "the probe script did not run"
        out = json.loads(html_mod.unescape(m.group(1)))
        if out["focus"]["page_had_focus"]:
            break
    n = res["tokens"]
    assert out["tokens"] == n and out["scripts"] == 3
    assert out["tabstops"] == 1 and out["focusable"] == n - 1      # roving tabindex
    assert out["hidden_before"] is True
    f = out["focus"]
    assert f["active_is_tok"] and f["hidden"] is False
    assert f"token 3 of {n}" in f["text"] and f"{res['bits'][2]:.2f} bits" in f["text"]
    assert f["rows"] >= 5                                            # top-5 (+ itself)
    assert out["arrow"]["active"] == 3 and out["arrow"]["tabstops"] == 1
    assert f"token 4 of {n}" in out["arrow"]["text"]
    assert out["hover"]["hidden"] is False and f"token 6 of {n}" in out["hover"]["text"]
    assert out["escape_hidden"] is True
    assert out["hist_bars"] >= 16
    # the text as rendered: the hostile markup is there as text, not as elements
    assert "<script>document.body.setAttribute" in out["text"]
    assert "<img src=x onerror=" in out["text"]
    assert "<script>document.body.setAttribute('data-pwned','3')</script>" in out["text"]
    assert "<!--" in out["text"] and "]]></script><script>" in out["text"]
    assert out["tip0"]["elements"] == 0
    assert "<script>document.body.setAttribute('data-pwned','3')</script>" in out["tip0"]["text"]


def test_browser_screenshot(hostile_page, tmp_path):
    path, _ = hostile_page
    shot = tmp_path / "shot.png"
    r = _chromium("file://" + os.path.abspath(path), f"--screenshot={shot}",
                  "--window-size=1100,900", "--hide-scrollbars")
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

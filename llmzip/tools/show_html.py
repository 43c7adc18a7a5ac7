"""HTML rendering of a per-token surprise result (see show.py for the data it takes).

One self-contained page: inline CSS, JS and SVG, nothing fetched; every token a coloured
span with its bits and the model's top alternatives in a tooltip; a histogram; totals next
to xz and zstd. All text is HTML-escaped, and JSON embedded in a script is escaped so it
cannot close the script element.
"""

from __future__ import annotations

import html
import json
import math
import unicodedata

import numpy as np

# Colour scale: matplotlib's magma_r (perceptually uniform, light = unsurprising) sampled
# at 0 .. 0.92 in 33 steps: level k is for bits in [k/2, k/2 + 1/2), level 32 for >= 16.
COLOURS = ("fcfdbf fcf0b2 fde3a5 fed597 fec88c febb81 feac76 fe9f6d fd9266 fb835f f8765c "
           "f4695c ee5b5e e75263 dc4869 d2426f c73d73 ba3878 ae347b a3307e 962c80 8b2981 "
           "802582 732081 681c81 5c167f 51127c 451077 38106c 2c115f 21114e 160f3b "
           "0e0b2b").split()
LEVEL_BITS = 0.5
SCALE_MAX_BITS = LEVEL_BITS * (len(COLOURS) - 1)          # 16 bits: the top colour

TEXT, HEX, NEWLINE, CR = 0, 1, 2, 3
TOP_K = 5
_CONTROL_NAMES = {"\x0b": "\\v", "\x0c": "\\f"}


def _text_segments(s: str) -> list[tuple[int, str]]:
    """Split text so that newlines and invisible or layout-changing characters (controls,
    format characters such as bidi overrides, separators) become visible escapes."""
    out: list[tuple[int, str]] = []
    buf = []
    for ch in s:
        if ch == "\n":
            kind, t = NEWLINE, "\n"
        elif ch == "\r":
            kind, t = CR, "\r"
        elif ch == "\t" or ch == " ":
            kind, t = TEXT, ch
        elif ch in _CONTROL_NAMES:
            kind, t = HEX, _CONTROL_NAMES[ch]
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Zs", "Co", "Cn", "Cs"):
            o = ord(ch)
            kind, t = HEX, (f"\\x{o:02x}" if o < 0x80 else
                            f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
        else:
            kind, t = TEXT, ch
        if kind == TEXT:
            buf.append(t)
            continue
        if buf:
            out.append((TEXT, "".join(buf)))
            buf = []
        if out and out[-1][0] == kind == HEX:
            out[-1] = (HEX, out[-1][1] + t)
        else:
            out.append((kind, t))
    if buf:
        out.append((TEXT, "".join(buf)))
    return out


def byte_segments(b: bytes) -> list[tuple[int, str]]:
    """Display segments for a byte string: valid UTF-8 as text, other bytes as \\xNN."""
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(b):
        try:
            out += _text_segments(b[i:].decode("utf-8"))
            break
        except UnicodeDecodeError as e:
            if e.start:
                out += _text_segments(b[i:i + e.start].decode("utf-8"))
            bad = "".join(f"\\x{c:02x}" for c in b[i + e.start:i + e.end])
            if out and out[-1][0] == HEX:
                out[-1] = (HEX, out[-1][1] + bad)
            else:
                out.append((HEX, bad))
            i += e.end
    return out


def level(bits: float) -> int:
    """Colour level (0 .. len(COLOURS)-1) for a number of bits."""
    if not bits > 0:            # also NaN
        return 0
    return min(len(COLOURS) - 1, int(bits / LEVEL_BITS))


def _luminance(hexcol: str) -> float:
    def lin(v):
        v /= 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
    r, g, b = (int(hexcol[j:j + 2], 16) for j in (0, 2, 4))
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def _text_colour(hexcol: str) -> str:
    """Black or white, whichever contrasts more with the background (WCAG ratio)."""
    L = _luminance(hexcol)
    return "#000" if (L + 0.05) / 0.05 >= 1.05 / (L + 0.05) else "#fff"


def _span_inner(segs) -> str:
    parts = []
    for kind, t in segs:
        if kind == TEXT:
            parts.append(html.escape(t, quote=False))
        elif kind == HEX:
            parts.append(f'<span class="hx">{html.escape(t, quote=False)}</span>')
        elif kind == CR:
            parts.append('<span class="nl">\\r</span>')
        else:
            parts.append('<span class="nl">\u21b5</span>\n')
    return "".join(parts)


def _fmt_bpb(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def _nice_step(vmax: float, n: int = 5) -> float:
    raw = max(vmax, 1) / n
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def histogram_svg(bits, width: int = 680, height: int = 240) -> str:
    """Inline SVG: tokens per 1-bit bin, bars in the page's colour scale, mean marked."""
    bits = np.asarray(bits, dtype=np.float64)
    top = int(math.ceil(float(bits.max()))) if bits.size else 0
    nbins = min(max(int(SCALE_MAX_BITS), top), 40)
    counts = np.zeros(nbins, dtype=np.int64)
    if bits.size:
        idx = np.clip(np.floor(bits).astype(np.int64), 0, nbins - 1)
        counts = np.bincount(idx, minlength=nbins)
    ml, mr, mt, mb = 56, 14, 14, 44
    pw, ph = width - ml - mr, height - mt - mb
    cmax = int(counts.max()) if counts.size and counts.max() > 0 else 1
    step = _nice_step(cmax)
    ymax = step * math.ceil(cmax / step)
    bw = pw / nbins
    total = max(1, int(bits.size))
    o = [f'<svg id="hist" class="hist" '         # inline SVG: no xmlns needed in HTML
         f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
         f'aria-labelledby="hist-title hist-desc">',
         '<title id="hist-title">Histogram of bits per token</title>',
         f'<desc id="hist-desc">Number of tokens in each 1-bit-wide bin of -log2 p, from 0 '
         f'to {nbins} bits ({total if bits.size else 0} tokens).</desc>']
    y = 0.0
    while y <= ymax + 1e-9:
        yy = mt + ph - ph * y / ymax
        o.append(f'<line class="grid" x1="{ml}" x2="{ml + pw}" y1="{yy:.1f}" y2="{yy:.1f}"/>')
        o.append(f'<text class="tick" x="{ml - 6}" y="{yy + 4:.1f}" text-anchor="end">'
                 f'{int(y) if float(y).is_integer() else y}</text>')
        y += step
    for i, c in enumerate(counts.tolist()):
        x = ml + i * bw
        col = COLOURS[level(i + 0.5)]
        hgt = ph * c / ymax
        last = i == nbins - 1 and top > nbins
        rng = f"≥ {i}" if last else f"{i}–{i + 1}"
        o.append(f'<rect class="bar" x="{x + 1:.1f}" y="{mt + ph - hgt:.1f}" '
                 f'width="{max(bw - 2, 1):.1f}" height="{hgt:.1f}" fill="#{col}">'
                 f'<title>{rng} bits: {c} tokens ({100 * c / total:.1f}%)</title></rect>')
    o.append(f'<line class="axis" x1="{ml}" x2="{ml + pw}" y1="{mt + ph}" y2="{mt + ph}"/>')
    o.append(f'<line class="axis" x1="{ml}" x2="{ml}" y1="{mt}" y2="{mt + ph}"/>')
    xstep = 2 if nbins <= 24 else 4
    for b in range(0, nbins + 1, xstep):
        xx = ml + b * bw
        o.append(f'<line class="axis" x1="{xx:.1f}" x2="{xx:.1f}" y1="{mt + ph}" '
                 f'y2="{mt + ph + 4}"/>')
        o.append(f'<text class="tick" x="{xx:.1f}" y="{mt + ph + 16}" '
                 f'text-anchor="middle">{b}</text>')
    o.append(f'<text class="label" x="{ml + pw / 2:.1f}" y="{height - 6}" '
             f'text-anchor="middle">bits per token (−log₂ p)</text>')
    o.append(f'<text class="label" transform="translate(14 {mt + ph / 2:.1f}) rotate(-90)" '
             f'text-anchor="middle">tokens</text>')
    if bits.size:
        mean = float(bits.mean())
        xx = ml + min(mean, nbins) * bw
        o.append(f'<line class="mean" x1="{xx:.1f}" x2="{xx:.1f}" y1="{mt}" y2="{mt + ph}"/>')
        anchor = "start" if mean < nbins * 0.75 else "end"
        dx = 4 if anchor == "start" else -4
        o.append(f'<text class="mean-label" x="{xx + dx:.1f}" y="{mt + 12}" '
                 f'text-anchor="{anchor}">mean {mean:.2f} bits</text>')
    o.append("</svg>")
    return "".join(o)


def _legend() -> str:
    boxes = "".join(f'<span class="sw c{k}"></span>' for k in range(len(COLOURS)))
    ticks = []
    n = len(COLOURS)
    for b in range(0, int(SCALE_MAX_BITS) + 1, 4):
        pos = 100 * (b / LEVEL_BITS) / n
        lab = f"≥{b}" if b == int(SCALE_MAX_BITS) else f"{b}"
        p = "1" if b == 0 else f"1/{2 ** b:,}".replace(",", "\u2009")
        ticks.append(f'<span class="lt" style="left:{pos:.2f}%">{lab}<br>'
                     f'<small>p={p}</small></span>')
    return (f'<div class="legend" id="legend"><div class="lg-title">bits per token '
            f'(−log₂ p): light = expected, dark = surprising</div>'
            f'<div class="lg-bar" aria-hidden="true">{boxes}</div>'
            f'<div class="lg-ticks">{"".join(ticks)}</div></div>')


def _json_for_script(obj) -> str:
    """JSON safe inside <script>: no '<', '>', '&' or line separators appear literally."""
    s = json.dumps(obj, ensure_ascii=True, separators=(",", ":"))
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _page_data(result: dict) -> dict:
    """The compact per-token data the page's script reads."""
    def seg_json(segs):
        if all(kind == TEXT for kind, _ in segs):
            return "".join(t for _, t in segs)
        return [[kind, t] for kind, t in segs]
    vocab = {i: seg_json(byte_segments(bytes.fromhex(h)))
             for i, h in result.get("vocab_hex", {}).items()}
    top = result.get("top", [])
    return {
        "ids": result["ids"],
        "bits": [round(b, 3) for b in result["bits"]],
        "rank": result.get("rank", []),
        "alt": [[a for a, _ in t] for t in top],
        "altp": [[float(f"{p:.4g}") for _, p in t] for t in top],
        "vocab": vocab,
        "esc": result.get("escape_id", -1),
    }


CSS = """
:root{--fg:#1b1b1f;--muted:#5d5d66;--line:#d9d9e0;--bg:#fff;--panel:#f6f6f9}
*{box-sizing:border-box}
body{margin:0;padding:24px 28px 48px;font:15px/1.45 system-ui,-apple-system,"Segoe UI",
Roboto,"Noto Sans",sans-serif;color:var(--fg);background:var(--bg);max-width:1180px}
h1{font-size:21px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 8px}
.sub{color:var(--muted);margin:0 0 14px}
code,.mono{font-family:ui-monospace,"SFMono-Regular","DejaVu Sans Mono",Menlo,Consolas,
monospace}
.note{background:#fff4d6;border:1px solid #e8c665;border-radius:6px;padding:8px 12px;
margin:10px 0}
.top{display:flex;flex-wrap:wrap;gap:18px 36px;align-items:flex-start}
table.totals{border-collapse:collapse;font-variant-numeric:tabular-nums}
table.totals th,table.totals td{padding:3px 14px 3px 0;text-align:left;font-weight:normal}
table.totals th{color:var(--muted)}table.totals td{font-weight:600}
.cmp{flex:1 1 420px;max-width:600px}.cmp .row{display:grid;grid-template-columns:200px 1fr 56px;
gap:8px;align-items:center;margin:3px 0;font-variant-numeric:tabular-nums}
.cmp .bar{height:14px;border-radius:3px;background:#8c2981}.cmp .bar.base{background:#9a9aa6}
.cmp .v{text-align:right;font-weight:600}.cmp .cap{color:var(--muted);font-size:13px}
.legend{margin:6px 0 4px;max-width:560px}.lg-title{font-size:13px;color:var(--muted);
margin-bottom:3px}.lg-bar{display:flex;height:16px;border:1px solid var(--line)}
.lg-bar .sw{flex:1}.lg-ticks{position:relative;height:34px;font-size:12px}
.lg-ticks .lt{position:absolute;transform:translateX(-50%);text-align:center;
white-space:nowrap;line-height:1.15;top:2px}.lg-ticks .lt small{color:var(--muted)}
.lg-ticks .lt:first-child{transform:none;text-align:left}
.lg-ticks .lt:last-child{transform:translateX(-100%);text-align:right}
.hist{max-width:100%;height:auto;display:block}
.hist .grid{stroke:#ececf1}.hist .axis{stroke:#777}.hist .tick{font-size:11px;fill:#555}
.hist .label{font-size:12px;fill:#333}.hist .mean{stroke:#0b6bcb;stroke-width:1.5;
stroke-dasharray:5 3}.hist .mean-label{font-size:12px;fill:#0b6bcb}
.hist .bar{stroke:rgba(0,0,0,.25);stroke-width:.5}
.text{white-space:pre-wrap;overflow-wrap:anywhere;font:14px/1.75 ui-monospace,
"SFMono-Regular","DejaVu Sans Mono",Menlo,Consolas,monospace;background:var(--panel);
border:1px solid var(--line);border-radius:8px;padding:14px 16px}
.tok{border-radius:2px;box-shadow:inset -1px 0 0 rgba(255,255,255,.7);cursor:default;
-webkit-box-decoration-break:clone;box-decoration-break:clone}
.tok:hover,.tok:focus,.tok.cur{outline:2px solid #0b6bcb;outline-offset:0;
position:relative;z-index:1}
.tok:focus-visible{outline:3px solid #0b6bcb}
.hx{font-style:italic;opacity:.85;font-size:.9em}.nl{opacity:.45}
.tip{position:absolute;z-index:10;max-width:440px;min-width:260px;background:#fff;
color:var(--fg);border:1px solid #b9b9c6;border-radius:8px;padding:9px 11px;
box-shadow:0 6px 24px rgba(0,0,0,.18);font-size:13px;pointer-events:none}
.tip[hidden]{display:none}
.tip .tt{display:inline-block;background:var(--panel);border:1px solid var(--line);
border-radius:4px;padding:1px 6px;white-space:pre;font-size:14px;max-width:100%;
overflow:hidden;text-overflow:ellipsis;vertical-align:middle}
.tip .meta{margin:6px 0 6px;color:var(--muted);font-variant-numeric:tabular-nums}
.tip .meta b{color:var(--fg)}
.tip table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
.tip td{padding:1px 6px 1px 0;vertical-align:middle}.tip td.r{color:var(--muted);width:1.6em}
.tip td.p{text-align:right;width:4.8em}.tip td.b{width:90px}
.tip td code{white-space:pre}.tip .pb{height:8px;background:#8c2981;border-radius:2px}
.tip tr.me td{font-weight:700}.tip tr.me code{outline:1.5px solid #0b6bcb}
.tip .gap td{color:var(--muted);padding:0}
.help{color:var(--muted);font-size:13px;margin:6px 0}
footer{margin-top:28px;color:var(--muted);font-size:12px}
"""

JS = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("tok-data").textContent);
  var text = document.getElementById("text");
  var tip = document.getElementById("tip");
  var toks = text.getElementsByClassName("tok");
  var n = toks.length, cur = null, rov = n ? toks[0] : null;
  for (var i = 0; i < n; i++) { toks[i].tabIndex = i ? -1 : 0; toks[i]._i = i; }

  function el(tag, cls, txt) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (txt != null) e.textContent = txt;
    return e;
  }
  function vis(s) { return s.replace(/ /g, "\u2423"); }  // spaces shown as open boxes
  function segs(into, v) {           // a vocab entry: a string or [[kind, text], ...]
    if (typeof v === "string") { into.appendChild(document.createTextNode(vis(v))); return; }
    for (var j = 0; j < v.length; j++) {
      var k = v[j][0], t = v[j][1];
      if (k === 0) into.appendChild(document.createTextNode(vis(t)));
      else into.appendChild(el("span", k === 1 ? "hx" : "nl",
                               k === 1 ? t : k === 3 ? "\\r" : "\u21b5"));
    }
  }
  function tokText(into, tokEl) {    // the token as shown in the text, spaces made visible
    var kids = tokEl.childNodes;
    for (var j = 0; j < kids.length; j++) {
      var c = kids[j];
      if (c.nodeType === 3) {
        var t = c.nodeValue.replace(/\n/g, "");
        if (t) into.appendChild(document.createTextNode(vis(t)));
      } else into.appendChild(c.cloneNode(true));
    }
    if (!into.childNodes.length) into.appendChild(document.createTextNode("\u2205"));
  }
  function fmtP(p) {
    if (p >= 0.001) return (100 * p).toFixed(p >= 0.1 ? 1 : 2) + "%";
    return p.toExponential(1);
  }
  function fill(i) {
    var id = D.ids[i], b = D.bits[i], p = Math.pow(2, -b);
    tip.textContent = "";
    var head = el("div");
    var tt = el("code", "tt");
    tokText(tt, toks[i]);
    head.appendChild(tt);
    tip.appendChild(head);
    var meta = el("div", "meta");
    var dot = " \u00b7 ";
    meta.appendChild(document.createTextNode("token " + (i + 1) + " of " + n + dot +
                                             "id " + id + dot));
    meta.appendChild(el("b", null, b.toFixed(2) + " bits"));
    meta.appendChild(document.createTextNode(dot + "p = " + fmtP(p) + dot + "rank " +
                                             D.rank[i]));
    if (id === D.esc) meta.appendChild(el("div", null,
      "escape token: the next byte token stands for its byte XOR 0x40"));
    tip.appendChild(meta);
    var tab = el("table"), alts = D.alt[i], ps = D.altp[i], found = false;
    for (var j = 0; j < alts.length; j++) {
      var me = alts[j] === id;
      found = found || me;
      tab.appendChild(row(j + 1, alts[j], ps[j], me));
    }
    if (!found) {
      var g = el("tr", "gap"); g.appendChild(el("td", null, "\u22ee")); tab.appendChild(g);
      tab.appendChild(row(D.rank[i], id, p, true));
    }
    var cap = el("div", "meta", "model's top " + alts.length + " for this position:");
    tip.appendChild(cap);
    tip.appendChild(tab);
  }
  function row(r, id, p, me) {
    var tr = el("tr", me ? "me" : null);
    tr.appendChild(el("td", "r", String(r)));
    var td = el("td"), c = el("code");
    var v = D.vocab[String(id)];
    segs(c, v == null ? "?" : v);
    td.appendChild(c); tr.appendChild(td);
    tr.appendChild(el("td", "p", fmtP(p)));
    var tb = el("td", "b"), bar = el("div", "pb");
    bar.style.width = Math.max(1, Math.round(100 * p)) + "%";
    tb.appendChild(bar); tr.appendChild(tb);
    return tr;
  }
  function place(t) {
    var r = t.getBoundingClientRect();
    tip.hidden = false;
    var w = tip.offsetWidth, h = tip.offsetHeight;
    var vw = document.documentElement.clientWidth, vh = window.innerHeight;
    var x = Math.min(Math.max(4, r.left), vw - w - 4);
    var y = r.bottom + 6;
    if (y + h > vh && r.top - h - 6 > 0) y = r.top - h - 6;
    tip.style.left = (x + window.scrollX) + "px";
    tip.style.top = (y + window.scrollY) + "px";
  }
  function show(t) {
    if (cur && cur !== t) cur.classList.remove("cur");
    cur = t; t.classList.add("cur");
    t.setAttribute("aria-describedby", "tip");
    fill(t._i); place(t);
  }
  function hide() {
    tip.hidden = true;
    if (cur) { cur.classList.remove("cur"); cur.removeAttribute("aria-describedby"); }
    cur = null;
  }
  function tokOf(node) {
    while (node && node !== text) {
      if (node.classList && node.classList.contains("tok")) return node;
      node = node.parentNode;
    }
    return null;
  }
  text.addEventListener("mouseover", function (e) { var t = tokOf(e.target); if (t) show(t); });
  text.addEventListener("mouseleave", function () {
    var a = tokOf(document.activeElement);
    if (a) show(a); else hide();
  });
  text.addEventListener("focusin", function (e) {
    var t = tokOf(e.target); if (!t) return;
    if (rov && rov !== t) rov.tabIndex = -1;   // roving tabindex: one tab stop
    rov = t; t.tabIndex = 0; show(t);
  });
  text.addEventListener("focusout", function (e) { if (!tokOf(e.relatedTarget)) hide(); });
  text.addEventListener("keydown", function (e) {
    var t = tokOf(e.target); if (!t) return;
    var i = t._i, j = i;
    switch (e.key) {
      case "ArrowRight": case "ArrowDown": j = i + 1; break;
      case "ArrowLeft": case "ArrowUp": j = i - 1; break;
      case "PageDown": j = i + 20; break;
      case "PageUp": j = i - 20; break;
      case "Home": j = 0; break;
      case "End": j = n - 1; break;
      case "Escape": hide(); return;
      default: return;
    }
    e.preventDefault();
    j = Math.max(0, Math.min(n - 1, j));
    toks[j].focus();
  });
  window.addEventListener("resize", function () { if (cur) place(cur); });
})();
"""


def render_html(result: dict) -> str:
    """The self-contained page for a `surprise` result (or its JSON)."""
    esc = html.escape
    colours = "".join(f".c{k}{{background:#{c};color:{_text_colour(c)}}}"
                      for k, c in enumerate(COLOURS))
    model = result.get("model") or {}
    mname = str(model.get("name", "?"))
    name = str(result.get("name") or "input")
    nb, nt = result["bytes"], result["tokens"]
    ids, bits = result["ids"], result["bits"]
    escape_id = result.get("escape_id", -1)
    spans = []
    for i, (tid, h, b) in enumerate(zip(ids, result["pieces_hex"], bits)):
        if tid == escape_id:
            inner = '<span class="hx">ESC</span>'
        else:
            inner = _span_inner(byte_segments(bytes.fromhex(h)))
        spans.append(f'<span class="tok c{level(b)}">{inner}</span>')
    bpb, bpt = result.get("bits_per_byte"), result.get("bits_per_token")
    base = result.get("baselines", {})
    rows = [(mname + ", ideal", bpb, False)]
    for key in ("xz-9e", "zstd-19"):
        if key in base:
            rows.append((base[key]["label"], base[key].get("bits_per_byte"), True))
    scale = max([8.0] + [v for _, v, _ in rows if v is not None])
    cmp_rows = "".join(
        f'<div class="row"><span>{esc(lab)}</span><div><div class="bar{" base" if b else ""}" '
        f'style="width:{100 * (v or 0) / scale:.1f}%"></div></div>'
        f'<span class="v">{_fmt_bpb(v)}</span></div>' for lab, v, b in rows)
    note = ""
    if result.get("truncated"):
        note = (f'<p class="note" id="truncated"><b>Capped:</b> only the first {nt:,} '
                f'tokens ({nb:,} of {result.get("input_bytes", nb):,} bytes) are shown and '
                f'counted (--max-tokens {result.get("max_tokens")}). All figures on this '
                f'page, xz and zstd included, are for that part.</p>')
    elif nt == 0:
        note = '<p class="note" id="empty">The input is empty: no tokens.</p>'
    fp = str(model.get("fingerprint", ""))[:16]
    params = model.get("params")
    model_desc = esc(mname) + (f", {params / 1e6:.0f}M params" if params else "") + \
        (f", vocab {model.get('vocab'):,}" if model.get("vocab") else "") + \
        (f", sha256 {esc(fp)}…" if fp else "")
    totals = (
        '<table class="totals" id="totals">'
        f'<tr><th>bytes</th><td>{nb:,}</td></tr>'
        f'<tr><th>tokens</th><td>{nt:,}</td></tr>'
        f'<tr><th>ideal bits</th><td>{result.get("bits_total", 0):,.1f}</td></tr>'
        f'<tr><th>ideal bits per byte</th><td>{_fmt_bpb(bpb)}</td></tr>'
        f'<tr><th>bits per token</th><td>{_fmt_bpb(bpt)}</td></tr>'
        f'<tr><th>bytes per token</th><td>{(nb / nt if nt else 0):.2f}</td></tr>'
        '</table>')
    title = f"llmzip surprise: {name}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{esc(title)}</title><style>{CSS}{colours}</style></head><body>'
        f'<h1>Per-token surprise: <code>{esc(name)}</code></h1>'
        f'<p class="sub">model {model_desc} · context {result.get("context")} tokens · '
        f'{esc(str(result.get("dtype", "")))} · scored in {result.get("seconds", 0):.1f} s'
        '</p>'
        f'{note}'
        '<div class="top"><div><h2>Totals</h2>' + totals + '</div>'
        '<div class="cmp" id="compare"><h2>Bits per byte</h2>' + cmp_rows +
        '<div class="cap">ideal = sum of −log₂ p over the tokens ÷ bytes (what a perfect '
        'coder would spend with these probabilities; an archive adds a few bytes). xz and '
        'zstd: real output sizes on the same bytes.</div></div></div>'
        '<h2>Bits per token</h2>' + histogram_svg(bits) +
        '<h2>Text</h2>' + _legend() +
        '<p class="help">Hover over a token, or Tab into the text and move with the arrow '
        'keys (Home/End, PageUp/PageDown), to see its bits and the model\'s top '
        f'{result.get("top_k", TOP_K)} alternatives. <span class="hx">\\xNN</span> marks '
        'bytes that are not valid UTF-8 on their own (part of a character split between '
        'tokens) or invisible characters; <span class="nl">\u21b5</span> a newline, '
        '<span class="nl">\\r</span> a carriage return; '
        '<span class="hx">ESC</span> the escape token.</p>'
        f'<div class="text" id="text" role="group" aria-label="tokens of {esc(name)} '
        f'coloured by bits">' + "".join(spans) + '</div>'
        '<div class="tip" id="tip" role="tooltip" hidden></div>'
        '<footer>Written by llmzip show. Data: the JSON file next to this page.</footer>'
        '<script type="application/json" id="tok-data">' +
        _json_for_script(_page_data(result)) + '</script>'
        f'<script>{JS}</script></body></html>\n')

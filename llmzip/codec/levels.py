"""Compression levels -1 .. -9, as xz and zstd users expect: from fast to strongest.

A level chooses the model, the exact engine's window (how much context each token sees,
and whether it slides or restarts from BOS), the segment length (longer segments keep
more context but give the decoder fewer segments to step together) and the adaptive
models (codec/adapt.py). Options given explicitly (--model, --seg-len, --window,
--stride, --adapt) override the level's. The figures in the notes (compress /
decompress speed on a 2-vCPU Zen 5) are measured by scripts/bench_levels.py
(docs/results.md; -6's speeds from its ablation row before the n-gram model, which adds
about 7% to the compress time; -7's beside other jobs; -2 to -5 on the Intel Xeon,
quiet, llmzip 0.13.1, before its faster adaptive models; -8 and -9 on the Intel Xeon,
quiet, llmzip 0.13.2, -9's compress with 0.13.3's one buffer for the output layer's sums,
before its one-call tables); bits/byte with 0.10's archive header (format 9).
`llmzip --help` prints this table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

DEFAULT_LEVEL = 6


@dataclass(frozen=True)
class Level:
    """One level's settings (Compressor keyword arguments)."""
    model: str | None = None     # None: the default model (or --model)
    seg_len: int = 2048          # most tokens per segment (BOS not counted)
    window: int = 0              # positions of the sliding window (0: one per segment)
    stride: int = 0              # tokens the window moves by when full
    slide: str = "shift"         # "shift": kept keys and values move with the window;
                                 # "rebuild": the kept context is computed again (0.3.0)
    adapt: dict = field(default_factory=dict)   # adaptive models' learning rates
    note: str = ""               # what it is for, for --help

    def settings(self) -> dict:
        d = asdict(self)
        d.pop("note")
        return d


_BIAS = {"bias": 14000}
_MIX = {"bias": 14000, "match": 20000, "ngram": 6000}
_ALL = {**_MIX, "tau": 2000000}           # temperature: costly; -0.0001 on SmolLM2,
                                          # -0.008 on Gemma (0.10; 0.9's `temper` +0.09
                                          # on html)
_W2 = dict(window=2048, stride=512)
_W4 = dict(window=4096, stride=1024)
_W4S = dict(window=4096, stride=256)      # shifting is cheap: a short stride keeps more
_W8 = dict(window=8192, stride=512)
_W32 = dict(window=32768, stride=512)     # Gemma's whole context: only its 3 global layers
                                          # of 18 see past 512 positions, so it is cheap

LEVELS = {
    1: Level(note="segments of 2,048 tokens from BOS (llmzip 0.2); alice29: 1.137 "
                  "bits/byte, 2,560 / 1,970 B/s"),
    2: Level(adapt=_BIAS, note="+ adaptive bias; alice29: 1.087 bits/byte, 3,990 / 1,690 "
                               "B/s"),
    3: Level(**_W2, seg_len=8192, adapt=_BIAS, note="window 2,048 sliding by 512; alice29: "
             "1.064 bits/byte, 3,460 / 910 B/s"),
    4: Level(**_W2, seg_len=8192, adapt=_MIX, note="+ match and n-gram models; alice29: "
             "1.062 bits/byte, 3,100 / 840 B/s"),
    5: Level(**_W4, seg_len=8192, adapt=_MIX, note="window 4,096 sliding by 1,024; alice29: "
             "1.058 bits/byte, 2,420 / 720 B/s"),
    6: Level(**_W4S, seg_len=16384, adapt=_MIX, note="window 4,096 shifted by 256, segments "
             "of 16,384; alice29: 1.051 bits/byte, ~1,400 / ~760 B/s"),
    7: Level(**_W8, seg_len=65536, adapt=_ALL,
             note="window 8,192, segments of 65,536, + temperature; alice29: 1.043 "
                  "bits/byte, ~670 B/s compress"),
    8: Level(model="gemma3-270m", **_W4S, seg_len=16384, adapt=_ALL,
             note="Gemma 3 270M, level 6's window; alice29: 1.019 bits/byte, 1,270 / 410 B/s"),
    9: Level(model="gemma3-270m", **_W32, seg_len=65536, adapt=_ALL,
             note="Gemma 3 270M, window 32,768, segments of 65,536; alice29: 1.004 "
                  "bits/byte, ~760 / ~300 B/s"),
}


def level_settings(level: int) -> dict:
    """Compressor keyword arguments of a level (1..9)."""
    from ..errors import UsageError
    if level not in LEVELS:
        raise UsageError(f"levels are 1..9, not {level}")
    return LEVELS[level].settings()


def describe() -> str:
    """The levels as a table for --help."""
    rows = []
    for n, lv in LEVELS.items():
        rows.append(f"  -{n}  {lv.note}{'  [default]' if n == DEFAULT_LEVEL else ''}")
    rows.append("  (compress / decompress on 2 vCPUs: -1, -6, -9 an AMD EPYC Zen 4; the "
                "others a Zen 5 or an\n  Intel Xeon: README.md, docs/results.md)")
    return "\n".join(rows)

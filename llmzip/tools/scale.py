"""Scaling study for online mode: bits per byte as a function of model and data size.

    llmzip scale --corpus ../shared/corpus/tinyshakespeare.txt \\
        --sizes 64K,128K,256K,640K --presets xs,s,m,l --out scale.jsonl --plots docs/img

(`python -m llmzip.tools.scale` takes the same arguments.)

Each run compresses the first D bytes of the corpus with one preset (N parameters) in
online mode and appends one JSON row to the JSONL file; rows already there are skipped, so
an interrupted sweep resumes where it stopped. In online mode the data is both the
training set and the test set, so bpb(N, D) is the average code length over a single pass:
it falls with D because later bytes are coded by a better-trained model.

The fit is  bpb(N, D) = E + A / N**alpha + B / D**beta  (N in millions of parameters, D in
MB, so the constants are well conditioned), done on the ideal code length (the sum of the
coding losses, header excluded) by scipy.optimize.curve_fit; uncertainties are the square
roots of the covariance diagonal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from ..errors import UsageError

DEFAULT_SIZES = "64K,128K,256K,640K"
DEFAULT_PRESETS = "xs,s,m,l"
FIT_NAMES = ("E", "A", "alpha", "B", "beta")


def parse_size(s: str) -> int:
    s = s.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20}.get(s[-1:], 1)
    try:
        return int(float(s[:-1] if s[-1:] in "KM" else s) * mult)
    except ValueError:
        raise UsageError(f"bad size {s!r} (use e.g. 64K, 1M, 100000)") from None


def _key(row: dict) -> tuple:
    return (row.get("corpus"), row.get("preset"), row.get("data_bytes"), row.get("seed", 0))


def read_rows(path: str) -> list[dict]:
    """Rows of a JSONL results file (a torn last line from an interrupted run is ignored)."""
    rows = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return rows


def run_sweep(corpus: str, sizes, presets, out_path: str, seed: int = 0,
              threads: int | None = None, log=print, progress=None) -> list[dict]:
    """Compress every (preset, prefix size) pair not yet in out_path; return all rows.

    sizes: ints or strings like "64K"; presets: names from online.PRESETS.
    progress(label, total_bytes) -> callable(n_bytes) with a close() (progress.Progress), or
    None: one bar per run.
    """
    from ..codec.online import PRESETS, compress_online, decompress_online, online_accounting
    sizes = [parse_size(s) if isinstance(s, str) else int(s) for s in sizes]
    for p in presets:
        if p not in PRESETS:
            raise UsageError(f"unknown preset {p!r} (choose from {', '.join(PRESETS)})")
    with open(corpus, "rb") as f:
        data = f.read(max(sizes))
    if len(data) < max(sizes):
        raise UsageError(f"{corpus} has {len(data)} bytes, fewer than {max(sizes)}")
    name = os.path.basename(corpus)
    rows = read_rows(out_path)
    done = {_key(r) for r in rows}
    for p in presets:                               # small models first: early rows are cheap
        for D in sizes:
            row = {"corpus": name, "preset": p, "data_bytes": D, "seed": seed}
            if _key(row) in done:
                continue
            bar = progress(f"{p} {D:,} B", D) if progress else None
            t0 = time.perf_counter()
            try:
                # the GPT alone (no context models mixed in): the claim is about the model
                blob = compress_online(data[:D], config={"preset": p, "mix": 0}, seed=seed,
                                       threads=threads, fallback=False, progress=bar)
            finally:
                if bar is not None:
                    bar.close()
            secs = time.perf_counter() - t0
            acc = online_accounting(blob)
            row.update(params=acc["n_params"], bpb=round(acc["bpb"], 5),
                       ideal_bpb=round(acc["ideal_bpb"], 5), archive_bytes=len(blob),
                       seconds=round(secs, 2), bytes_per_s=round(D / secs, 1))
            if D <= 1 << 15:                        # cheap enough: prove the round trip too
                row["round_trip"] = decompress_online(blob) == data[:D]
            with open(out_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            rows.append(row)
            if log:
                log(f"{p:>3} N={row['params']:>9,} D={D:>9,}  bpb {row['bpb']:.3f} "
                    f"(ideal {row['ideal_bpb']:.3f})  {row['bytes_per_s']:,.0f} B/s")
    return rows


def _law(x, E, A, alpha, B, beta):
    N, D = x
    return E + A / N ** alpha + B / D ** beta


def fit_law(rows: list[dict]) -> dict:
    """Fit bpb(N, D) = E + A/N^alpha + B/D^beta to the rows' ideal_bpb (N in M params,
    D in MB). Returns constants, their standard errors and the RMS residual; "ok" is
    False (with "error") when the fit cannot be made."""
    from scipy.optimize import curve_fit
    pts = [(r["params"] / 1e6, r["data_bytes"] / 1e6, r.get("ideal_bpb", r.get("bpb")))
           for r in rows if r.get("params") and r.get("data_bytes")]
    if len(pts) < 6:
        return {"ok": False, "error": f"need at least 6 runs to fit 5 constants, have {len(pts)}"}
    N, D, y = (np.array(v, dtype=np.float64) for v in zip(*pts))
    p0 = [max(0.5, y.min() - 0.5), 0.3, 0.5, 0.3, 0.5]
    try:
        popt, pcov = curve_fit(_law, (N, D), y, p0=p0, bounds=([0, 0, 0, 0, 0],
                               [8, 100, 3, 100, 3]), maxfev=20000)
    except (RuntimeError, ValueError) as e:
        return {"ok": False, "error": str(e)}
    err = np.sqrt(np.clip(np.diag(pcov), 0, None))
    resid = y - _law((N, D), *popt)
    out = {"ok": True, "n_points": len(y), "rms_residual": float(np.sqrt(np.mean(resid ** 2))),
           "units": "N in millions of parameters, D in MB (1e6 bytes), bpb = ideal bits/byte"}
    for k, v, e in zip(FIT_NAMES, popt, err):
        out[k], out[k + "_err"] = float(v), float(e)
    return out


def plot(rows: list[dict], fit: dict | None, out_dir: str) -> list[str]:
    """Two PNGs: bpb vs parameters (one line per data size) and bpb vs data size (one line
    per model); the fitted law dashed where a fit is given."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    os.makedirs(out_dir, exist_ok=True)
    rows = [r for r in rows if r.get("params") and r.get("data_bytes")]
    Ns = sorted({r["params"] for r in rows})
    Ds = sorted({r["data_bytes"] for r in rows})
    y = {(r["params"], r["data_bytes"]): r.get("ideal_bpb", r.get("bpb")) for r in rows}
    law = None
    if fit and fit.get("ok"):
        law = lambda n, d: _law((np.asarray(n) / 1e6, np.asarray(d) / 1e6),  # noqa: E731
                                *(fit[k] for k in FIT_NAMES))
    paths = []
    for xs_name, xs, lines, label in (("params", Ns, Ds, "D = {:,.0f} KB"),
                                      ("data", Ds, Ns, "N = {:,.0f}K params")):
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for i, other in enumerate(lines):
            pts = [(x, y[(x, other) if xs_name == "params" else (other, x)]) for x in xs
                   if ((x, other) if xs_name == "params" else (other, x)) in y]
            if not pts:
                continue
            line, = ax.plot(*zip(*pts), "o-", label=label.format(other / 1e3))
            if law is not None:
                grid = np.geomspace(min(xs), max(xs), 50)
                fy = law(grid, other) if xs_name == "params" else law(other, grid)
                ax.plot(grid, fy, "--", color=line.get_color(), alpha=0.6)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())   # minor labels overlap at 3e4, 4e4
        ax.set_xlabel("parameters" if xs_name == "params" else "data size (bytes)")
        ax.set_ylabel("bits per byte (sum of coding losses / bytes)")
        if law is not None:
            ax.set_title(f"fit: E={fit['E']:.2f} + A/N^{fit['alpha']:.2f} + "
                         f"B/D^{fit['beta']:.2f}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, f"scale_bpb_vs_{xs_name}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--corpus", default=os.path.join("..", "shared", "corpus",
                                                     "tinyshakespeare.txt"),
                    help="text whose prefixes are compressed (default: tinyshakespeare)")
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="prefix sizes, e.g. 64K,1M")
    ap.add_argument("--presets", default=DEFAULT_PRESETS, help="online presets, e.g. xs,s,m,l")
    ap.add_argument("--out", default="scale.jsonl", help="JSONL results (resumed)")
    ap.add_argument("--plots", default=None, help="folder for the PNGs")
    ap.add_argument("--fit-json", default=None, help="write the fit here")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-run", action="store_true", help="only fit and plot existing rows")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def run_cli(a) -> int:
    """Run the sweep (or not, with --no-run), then fit and plot; raises UsageError and
    OSError for the caller to report."""
    from ..progress import Progress
    sizes = [parse_size(s) for s in a.sizes.split(",") if s.strip()]
    presets = [p.strip() for p in a.presets.split(",") if p.strip()]
    if not sizes or not presets:
        raise UsageError("give at least one size (--sizes) and one preset (--presets)")
    quiet = getattr(a, "quiet", False)
    rows = read_rows(a.out) if a.no_run else run_sweep(
        a.corpus, sizes, presets, a.out, seed=a.seed, threads=a.threads,
        progress=lambda label, total: Progress(total, label, quiet))
    fit = fit_law(rows)
    if fit.get("ok"):
        print("bpb(N, D) = E + A/N^alpha + B/D^beta   (N: M params, D: MB)")
        for k in FIT_NAMES:
            print(f"  {k:>5} = {fit[k]:.4f} ± {fit[k + '_err']:.4f}")
        print(f"  rms residual {fit['rms_residual']:.4f} bpb over {fit['n_points']} runs")
    else:
        print(f"no fit: {fit['error']}")
    if a.fit_json:
        with open(a.fit_json, "w") as f:
            json.dump(fit, f, indent=1)
    if a.plots:
        for p in plot(rows, fit, a.plots):
            print("wrote", p)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llmzip.tools.scale", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    a = ap.parse_args(argv)
    try:
        return run_cli(a)
    except (UsageError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""Cluster benchmark and scaling projection (scripts/bench_cluster.py, docs/cluster.md).

bench_cluster() measures, on one input: the single-process path, then the work layer with
1, 2, ... local Ray workers (compress and decompress B/s, each archive checked to be the
single-process one byte for byte and each output the input), and what the projection
needs: worker time per chunk, model load time per worker, the driver's planning rate
(text/binary routing and tokenising, the serial part) and the bytes sent each way.

project() turns those into the expected wall time for a corpus (1 GB of English text) on
W workers:

    chunks   N = ceil(corpus / chunk_bytes)       chunk_bytes: a default chunk (64
                                                  segments x 2,048 tokens) of this text
    waves    ceil(N / W)                          every worker codes whole chunks
    work     waves x chunk_bytes / rate           rate: one worker's B/s
    wall     load + max(work, corpus / plan_rate) + corpus x bytes_moved / link

The driver plans while workers code, so its serial part overlaps the work; the last wave
is partly empty when N is not a multiple of W (the tail); beyond W = N there is nothing
more to hand out.
"""

from __future__ import annotations

import io
import math
import os
import platform
import time

CORPUS = 10 ** 9                      # 1 GB of English text
LINK = 1.25e9                         # bytes/s into the driver: a 10 Gbit/s network
DEFAULT_CHUNK_TOKENS = 64 * 2048      # batch x seg_len of the default settings


def project(rate_c: float, rate_d: float, load: float, plan_rate: float,
            bytes_per_token: float, moved_c: float, moved_d: float,
            workers=(1, 8, 64, 512), corpus: int = CORPUS, link: float = LINK,
            chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> list[dict]:
    """Expected wall seconds to compress and decompress `corpus` bytes on each worker
    count (see the module docstring). moved_*: bytes through the driver's network link
    per input byte (sent plus received)."""
    chunk = chunk_tokens * bytes_per_token
    n = math.ceil(corpus / chunk)
    rows = []
    for w in workers:
        waves = math.ceil(n / w)
        work_c, work_d = waves * chunk / rate_c, waves * chunk / rate_d
        plan = corpus / plan_rate
        net_c, net_d = corpus * moved_c / link, corpus * moved_d / link
        wall_c = load + max(work_c, plan) + net_c
        wall_d = load + work_d + net_d
        ideal = corpus / rate_c / w
        if w > n:
            limit = f"{w - n} workers idle: only {n} chunks"
        elif plan > work_c:
            limit = "driver planning (serial)"
        elif n % w:
            limit = f"tail: last wave {n - (waves - 1) * w} of {w}"
        else:
            limit = "none (every wave full)"
        rows.append({"workers": w, "chunks": n, "waves": waves,
                     "compress_s": wall_c, "decompress_s": wall_d,
                     "efficiency": ideal / wall_c, "limit": limit})
    return rows


def human(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def bench_cluster(data: bytes, model=None, workers=(1, 2), address: str = "auto",
                  **settings) -> dict:
    """Single process, then each worker count on one local Ray cluster; see the module
    docstring. settings: Compressor options (threads is 1 everywhere)."""
    from ..codec import container as ct
    from ..codec.api import Compressor
    from ..codec.decompressor import Decompressor
    from . import cluster as cl
    settings = dict(settings, threads=1)
    res: dict = {"input_bytes": len(data), "settings": settings, "rows": [],
                 "machine": {"cpus": cl.local_cpus(), "processor": platform.processor(),
                             "node": platform.node()}}
    t0 = time.perf_counter()
    comp = Compressor(model, **settings)
    comp.engine_profile()                               # loads the weights
    res["model"] = comp.model.name
    res["model_load_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tasks = list(comp.plan(data))
    res["plan_s"] = time.perf_counter() - t0
    tokens = sum(len(t[1]) for t in tasks if t[0] == "model")
    res["tokens"] = tokens
    t0 = time.perf_counter()
    blob = comp.compress(data)
    tc = time.perf_counter() - t0
    dec = Decompressor(model, threads=1)
    t0 = time.perf_counter()
    back = dec.decompress(blob)
    td = time.perf_counter() - t0
    assert back == data
    n_chunks = len(ct.scan(blob).chunks)
    res["archive_bytes"], res["chunks"] = len(blob), n_chunks
    res["rows"].append({"path": "single process", "workers": 1, "compress_s": tc,
                        "decompress_s": td, "compress_Bps": len(data) / tc,
                        "decompress_Bps": len(data) / td})
    t0 = time.perf_counter()
    with cl.Cluster(address, workers=max(workers)) as cluster:
        res["ray_start_s"] = time.perf_counter() - t0
        for w in workers:
            out = io.BytesIO()
            t0 = time.perf_counter()
            st, ps = cl.compress_to(cluster, data, out, model, workers=w, **settings)
            tc = time.perf_counter() - t0
            assert out.getvalue() == blob, "cluster archive differs from single process"
            sink = io.BytesIO()
            t0 = time.perf_counter()
            n, pd = cl.decompress_to(cluster, io.BytesIO(blob), sink, model, workers=w,
                                     threads=1)
            td = time.perf_counter() - t0
            assert sink.getvalue() == data
            load_c, load_d = max(ps.setup_seconds), max(pd.setup_seconds)
            res["rows"].append({
                "path": f"Ray, {w} local worker{'s' * (w > 1)}", "workers": w,
                "compress_s": tc, "decompress_s": td,
                "compress_Bps": len(data) / tc, "decompress_Bps": len(data) / td,
                "compress_Bps_after_load": len(data) / max(tc - load_c, 1e-9),
                "decompress_Bps_after_load": len(data) / max(td - load_d, 1e-9),
                "worker_load_s": [load_c, load_d],
                "chunk_s_compress": ps.chunk_seconds, "chunk_s_decompress": pd.chunk_seconds,
                "sent_bytes": [ps.task_bytes, pd.task_bytes],
                "received_bytes": [ps.result_bytes, pd.result_bytes],
                "retries": ps.retries + pd.retries})
    one = next(r for r in res["rows"] if r["workers"] == 1 and "Ray" in r["path"])
    rate_c = len(data) / sum(one["chunk_s_compress"])
    rate_d = len(data) / sum(one["chunk_s_decompress"])
    moved_c = (one["sent_bytes"][0] + one["received_bytes"][0]) / len(data)
    moved_d = (one["sent_bytes"][1] + one["received_bytes"][1]) / len(data)
    res["projection_inputs"] = inputs = {
        "rate_c": rate_c, "rate_d": rate_d, "load": max(one["worker_load_s"]),
        "plan_rate": len(data) / res["plan_s"],
        "bytes_per_token": len(data) / tokens if tokens else 4.0,
        "moved_c": moved_c, "moved_d": moved_d}
    res["projection"] = project(**inputs)
    return res


def format_bench(res: dict) -> str:
    lines = [f"input {res['input_bytes']} bytes, {res['chunks']} chunks, model "
             f"{res['model']} (load {res['model_load_s']:.1f} s), settings "
             f"{res['settings']}, {res['machine']['cpus']} CPUs; Ray start "
             f"{res.get('ray_start_s', 0):.1f} s",
             f"{'path':24s} {'compress B/s':>13s} {'decompress B/s':>15s} "
             f"{'(after model load)':>20s}"]
    for r in res["rows"]:
        after = (f"{r['compress_Bps_after_load']:,.0f} / {r['decompress_Bps_after_load']:,.0f}"
                 if "compress_Bps_after_load" in r else "")
        lines.append(f"{r['path']:24s} {r['compress_Bps']:13,.0f} {r['decompress_Bps']:15,.0f} "
                     f"{after:>20s}")
    i = res["projection_inputs"]
    lines.append(f"projection for 1 GB: worker {i['rate_c']:,.0f} / {i['rate_d']:,.0f} B/s "
                 f"(compress / decompress), load {i['load']:.1f} s, driver plans "
                 f"{i['plan_rate'] / 1e6:.2f} MB/s, {i['bytes_per_token']:.2f} bytes/token")
    for p in res["projection"]:
        lines.append(f"  {p['workers']:4d} workers: compress {human(p['compress_s']):>8s}, "
                     f"decompress {human(p['decompress_s']):>8s}, efficiency "
                     f"{100 * p['efficiency']:.0f}% ({p['limit']})")
    return "\n".join(lines)


def write_results(res: dict, out_dir: str) -> str:
    import json
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(res, f, indent=1, default=str)
    return path

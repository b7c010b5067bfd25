"""bench/bench_serve.py end to end at the smallest size: the three paths, the paired ratios and the
CPU-per-token line, so the benchmark keeps working between the sessions that run it in full."""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_serving_benchmark_runs_all_paths_and_reports(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_serve.py"), "--preset", "tiny", "--lengths", "8",
         "--concurrency", "1,2", "--new-tokens", "12", "--rounds", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())["results"]
    cells = {(r["path"], r["concurrency"]) for r in results}
    assert cells == {(p, c) for p in ("in-process", "http", "transformers") for c in (1, 2)}
    for r in results:
        assert len(r["rounds_decode_tps"]) == 2 and r["aggregate_tps"] > 0
        # over HTTP a stream whose tokens all come in one chunk has no decode rate (NaN), not an error
        assert r["decode_tps_stream"] > 0 or (r["path"] == "http" and math.isnan(r["decode_tps_stream"]))
    text = (out / "table.md").read_text()
    assert "decode ours/transformers" in text and "(rounds " in text and "HTTP overhead" in text
    assert "CPU per token at concurrency 1" in text and "ms engine thread" in text
    assert (out / "tps.svg").read_text().startswith("<svg")


def test_the_decoding_step_benchmark_checks_and_times_every_path():
    """bench/bench_decode.py with --graph --compile: the four steps agree on the logits (it exits
    non-zero otherwise) and each gets a time, an op count and a ratio against decode_slots; the
    compiled step dispatches fewer operations than the eager static one; the last line names the
    serve flags of the fastest server path (what bench/device_checks.sh passes on)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_decode.py"), "--preset", "tiny", "--rounds", "2",
         "--steps", "3", "--graph", "--compile"],
        capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ops = {}
    for line in proc.stdout.splitlines():
        if "ms/step" in line and "ops/step" in line:
            ops[line.split()[0]] = float(line.split()[-2])
    assert set(ops) == {"slots", "forward", "graph", "compiled"}, proc.stdout
    assert ops["compiled"] < ops["graph"] / 2, ops
    assert "ratio forward/slots" in proc.stdout and "ratio compiled/slots" in proc.stdout
    assert "compiled: prepared in" in proc.stdout
    last = proc.stdout.splitlines()[-1]
    assert last in ("serve with:", "serve with: --cuda-graph", "serve with: --cuda-graph --compile"), last


def test_a_compile_past_its_time_limit_is_abandoned_and_the_rest_still_timed():
    """--compile-timeout (the device run's decode stage has a time limit of its own): the compile is
    given up with its reason, the exit status says a path failed, and the table and the serve flags of
    the paths that were prepared still come out."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_decode.py"), "--preset", "tiny", "--rounds", "2",
         "--steps", "3", "--graph", "--compile", "--compile-timeout", "0.01"],
        capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "compiled: failed to prepare:" in proc.stdout and "--compile-timeout 0.01 s" in proc.stdout
    assert "ratio graph/slots" in proc.stdout and "ratio compiled/slots" not in proc.stdout
    assert proc.stdout.splitlines()[-1] in ("serve with:", "serve with: --cuda-graph")

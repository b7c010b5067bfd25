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


def test_a_stop_signal_that_python_swallows_still_stops_the_benchmark(tmp_path):
    """A SIGTERM whose handler runs inside a weakref callback: Python prints the handler's SystemExit
    and carries on ("Exception ignored in"), and the benchmark once ran on to exit 0 (or 1). It must
    still stop at the end of that round, as the signal, with the cells so far kept."""
    driver = f"""
import os, signal, sys, weakref
sys.path.insert(0, {str(ROOT / "bench")!r})
import bench_serve

real, calls = bench_serve.run_inprocess, []

def round_then_signal_in_a_callback(engine, ps, n):
    calls.append(1)
    out = real(engine, ps, n)
    if len(calls) == 5:  # the warm-up, three rounds of the first cell, one of the second
        class Held:
            pass
        held = Held()
        ref = weakref.ref(held, lambda r: os.kill(os.getpid(), signal.SIGTERM))
        del held
    return out

bench_serve.run_inprocess = round_then_signal_in_a_callback
sys.exit(bench_serve.main(sys.argv[1:]))
"""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", driver, "--preset", "tiny", "--lengths", "8,16", "--concurrency", "1",
         "--new-tokens", "4", "--rounds", "3", "--skip", "http,transformers", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert "Exception ignored in" in proc.stderr, proc.stderr[-2000:]  # the case this test is about
    assert proc.returncode == 143, proc.stderr[-2000:]
    result = json.loads((out / "results.json").read_text())
    assert result["complete"] is False and [r["prompt"] for r in result["results"]] == [8]


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
    assert "compiled: prepared in" in proc.stdout and "s (compiled, eager)" in proc.stdout
    last = proc.stdout.splitlines()[-1]
    assert last in ("serve with:", "serve with: --cuda-graph", "serve with: --cuda-graph --compile"), last


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _running(pid: int) -> bool:
    """Whether process pid exists and is not a zombie (exited, waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_benchmark_stopped_at_its_time_limit_keeps_its_cells_and_stops_its_server(tmp_path):
    """`timeout` (a device-run stage's limit) sends SIGTERM: the cells measured so far are in
    results.json (marked incomplete) and the HTTP server child is stopped with it, not left holding
    the device for the next stage."""
    import signal
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "bench_serve.py"), "--preset", "tiny",
         "--lengths", "8,16,24,32,40,48,56,64,72,80,88,96,104,112",  # still running when the first cell is written
         "--concurrency", "1", "--new-tokens", "8", "--rounds", "40", "--skip", "transformers", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    try:
        deadline = time.monotonic() + 240
        while not (out / "results.json").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        children = _children(proc.pid)
        assert proc.poll() is None and children, "the benchmark ended (or never started its server) too soon"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    time.sleep(0.5)
    assert not [pid for pid in children if _running(pid)]
    result = json.loads((out / "results.json").read_text())
    assert result["complete"] is False and result["results"] and result["results"][0]["prompt"] == 8

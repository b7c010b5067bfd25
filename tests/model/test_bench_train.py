"""bench/bench_train.py (the CPU trainer target: ours against transformers' Llama) at its smallest, so
the benchmark keeps working between the sessions that run it in full."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_trainer_benchmark_checks_the_losses_and_prints_both_ratios():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_train.py"), "--preset", "tiny", "--batch", "2",
         "--seq-len", "32", "--rounds", "2", "--steps", "1"],
        capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]  # it asserts the two first losses agree
    out = proc.stdout
    assert re.search(r"^tenali_model step +[\d,]+ tokens/s", out, re.M), out
    assert re.search(r"^transformers [\d.]+ Llama +[\d,]+ tokens/s", out, re.M), out
    wall = re.search(r"^ratio ours/theirs +([\d.]+)x", out, re.M)
    cpu = re.search(r"^ratio by CPU time +([\d.]+)x .*thread_time: ([\d.]+) / ([\d.]+) ms/step", out, re.M)
    assert wall and cpu, out
    assert float(wall.group(1)) > 0 and float(cpu.group(1)) > 0
    assert float(cpu.group(2)) > 0 and float(cpu.group(3)) > 0

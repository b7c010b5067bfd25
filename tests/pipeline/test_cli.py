"""The tenali command's info and environment set-up, and the progress logger used by `tenali demo`."""

import io
import logging
import os
import re
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest

from tenali_pipeline import cli
from tenali_pipeline.progress import ProgressHandler, progress_logger
from tenali_pipeline.settings import VARIABLES


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean TENALI_HOME in tmp_path; everything the command sets in os.environ is undone afterwards."""
    for name in VARIABLES:
        monkeypatch.setenv(name, "")  # records the original value (or its absence) for undo,
        monkeypatch.delenv(name)      # so what cli writes into os.environ does not outlive the test
    monkeypatch.setenv("TENALI_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_info_verbose_prints_the_lake_and_every_variable(env, capsys, monkeypatch):
    monkeypatch.setenv("TENALI_TICKERS", "NVDA,AMD")
    assert cli.main(["info", "-v"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^lake\s+{re.escape(str(env / 'lake'))}$", out, re.M)
    assert re.search(rf"^dagster home\s+{re.escape(str(env / 'dagster'))}$", out, re.M)
    assert re.search(r"^profile\s+demo$", out, re.M)
    assert re.search(r"^model\s+demo \(300 steps\)$", out, re.M)
    assert re.search(r"^pretraining\s+the demo recipe: seq_len 128, 16 per rank, .* lr 0.003, warmup 30$", out, re.M)
    listed = re.findall(r"^  ([A-Z][A-Z0-9_]+) ", out, re.M)
    assert listed == list(VARIABLES)
    assert re.search(r"^  TENALI_TICKERS\s+NVDA,AMD\s", out, re.M)  # a set variable shows its value
    assert re.search(r"^  TENALI_VAL_START\s+-\s", out, re.M)  # an unset one shows '-'
    assert re.search(rf"^  TENALI_HOME\s+{re.escape(str(env))}\s", out, re.M)



def test_info_prints_the_pretraining_a_bigger_model_would_get(env, capsys, monkeypatch):
    monkeypatch.setenv("TENALI_MODEL", "7b")
    monkeypatch.setenv("TENALI_TRAIN_CONFIG", '{"lr": 2e-4}')
    assert cli.main(["info"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("pretraining"))
    assert "the 7b recipe + TENALI_TRAIN_CONFIG: seq_len 4,096, 1 per rank, 4,194,304 tokens per step, lr 0.0002" in line

def test_info_never_prints_a_secret(env, capsys, monkeypatch):
    monkeypatch.setenv("FRED_API_KEY", "abcdef0123456789secret")
    assert cli.main(["info", "-v"]) == 0
    out = capsys.readouterr().out
    assert "abcdef0123456789" not in out
    assert re.search(r"^  FRED_API_KEY\s+\(set\)\s", out, re.M)


def test_info_without_verbose_lists_no_variables(env, capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "variables:" not in out and "TENALI_TICKERS" not in out
    assert str(env / "lake") in out


def test_info_reports_a_bad_setting(env, monkeypatch, capsys):
    monkeypatch.setenv("TENALI_PROFILE", "prod")
    assert cli.main(["info"]) == 2
    assert "TENALI_LAKE_ROOT" in capsys.readouterr().err


def test_prepare_environment_installs_the_instance_config(env):
    cli._prepare_environment()
    dagster_home = Path(os.environ["DAGSTER_HOME"])
    assert dagster_home == env / "dagster"
    assert os.environ["TENALI_HOME"] == str(env)
    packaged = (Path(cli.__file__).parent / "instance" / "dagster.yaml").read_text()
    assert (dagster_home / "dagster.yaml").read_text() == packaged
    assert "telemetry" in packaged
    # an instance's own dagster.yaml is never overwritten
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: true\n")
    cli._prepare_environment()
    assert (dagster_home / "dagster.yaml").read_text() == "telemetry:\n  enabled: true\n"


def test_prepare_environment_makes_relative_paths_absolute_and_respects_dagster_home(env, monkeypatch):
    monkeypatch.setenv("TENALI_HOME", "rel/home")
    monkeypatch.setenv("DAGSTER_HOME", "elsewhere/instance")
    cli._prepare_environment()
    assert os.environ["TENALI_HOME"] == str(env / "rel" / "home")
    assert os.environ["DAGSTER_HOME"] == str(env / "elsewhere" / "instance")
    assert (env / "elsewhere" / "instance" / "dagster.yaml").is_file()
    assert not (env / "rel" / "home" / "dagster").exists()


def test_environment_is_restored_after_the_cli_tests():
    # runs after the tests above in this module: _prepare_environment's writes were undone
    assert "DAGSTER_HOME" not in os.environ and "TENALI_HOME" not in os.environ


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([])
    assert e.value.code == 2


# ---- progress -------------------------------------------------------------------------------
def _record(step: str, kind: str | None, message: str = "", level: int = logging.DEBUG, **event_fields):
    record = logging.LogRecord("dagster", level, __file__, 1, message, None, None)
    event = SimpleNamespace(event_type_value=kind, **event_fields) if kind else None
    record.dagster_meta = {"dagster_event": event, "step_key": step, "orig_message": message}
    return record


def test_progress_handler_prints_a_line_per_finished_step():
    stream = io.StringIO()
    handler = ProgressHandler(total=12, stream=stream)
    error = SimpleNamespace(to_string=lambda: "ValueError: boom")
    check = SimpleNamespace(passed=False, asset_check_key=SimpleNamespace(name="unique_key"),
                            asset_key=dg.AssetKey("clean_market_prices"))
    for record in [
        _record("raw_market_prices", "STEP_START"),
        _record("raw_market_prices", "STEP_OUTPUT"),                       # engine noise: nothing
        _record("raw_market_prices", None, "fetched 100 rows", logging.INFO),  # the step's own log
        _record("raw_market_prices", None, "debug chatter", logging.DEBUG),
        _record("", None, "run-level info", logging.INFO),                  # not a step's log
        _record("raw_market_prices", "STEP_SUCCESS"),
        _record("clean_market_prices", "ASSET_CHECK_EVALUATION", event_specific_data=check),
        _record("clean_market_prices", "STEP_UP_FOR_RETRY"),
        _record("clean_market_prices", "STEP_FAILURE",
                step_failure_data=SimpleNamespace(error=error)),
    ]:
        handler.emit(record)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "        raw_market_prices: fetched 100 rows"
    assert re.fullmatch(r"\[ 1/12\] raw_market_prices +\d+\.\ds", lines[1])
    assert lines[2] == "        check unique_key on clean_market_prices FAILED"
    assert lines[3] == "        clean_market_prices: up for retry"
    assert re.fullmatch(r"\[ 2/12\] clean_market_prices +\d+\.\ds  FAILED", lines[4])
    assert lines[5] == "ValueError: boom"
    assert len(lines) == 6


def test_progress_logger_in_a_real_run(capsys):
    @dg.asset
    def first() -> int:
        return 1

    @dg.asset
    def second(context: dg.AssetExecutionContext, first: int) -> int:
        context.log.info("second saw %d", first)
        return first + 1

    @dg.asset_check(asset=second)
    def second_is_small(second: int) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=second < 0)

    @dg.asset(deps=[second])
    def broken() -> None:
        raise RuntimeError("broken on purpose")

    defs = dg.Definitions(assets=[first, second, broken], asset_checks=[second_is_small],
                          jobs=[dg.define_asset_job("all", selection="*")])
    job = defs.resolve_job_def("all").with_logger_defs({"progress": progress_logger})
    total = cli._count_steps(job)
    assert total == 4
    capsys.readouterr()
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
                                    run_config={"loggers": {"progress": {"config": {"total": total}}}})
    assert not result.success
    lines = capsys.readouterr().out.splitlines()
    steps = [line for line in lines if line.startswith("[")]
    assert [re.match(r"\[(\d)/4\]", s).group(1) for s in steps] == ["1", "2", "3", "4"]
    assert {s.split()[1] for s in steps} == {"first", "second", "second_second_is_small", "broken"}
    assert [s for s in steps if s.endswith("FAILED")] == [s for s in steps if " broken " in s]
    assert "        second: second saw 1" in lines
    assert "        check second_is_small on second FAILED" in lines
    assert any("broken on purpose" in line for line in lines)


# ---- tenali ui: stopping the Dagster child -------------------------------------------------------
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

# Stands in for `dagster dev`: says it is up, then stops at once on SIGINT or SIGTERM (or exits by
# itself after 30 s, so nothing outlives a failing test).
_STAND_IN = """
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
{setup}
try:  # the file exists from open() on: a stop sent from then on must end here, not in a traceback
    Path(sys.argv[1]).write_text("up")
    time.sleep(30)
except KeyboardInterrupt:
    sys.exit(0)
sys.exit({code})
"""


def _run_ui_with_stand_in(monkeypatch, ready: Path, send=None, setup="", code=7):
    """cmd_ui with the stand-in as its child; `send` is a signal the test sends itself once the child is up.
    Returns (exit status, seconds from the signal, or from the start without one, to cmd_ui's return, the child):
    the child's start-up, however slow on a loaded machine, is not part of how long the stop took."""
    started, sent = [], []
    real_popen = subprocess.Popen

    def popen(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "dagster", "dev"] and kwargs.get("start_new_session") is True
        proc = real_popen([sys.executable, "-c", _STAND_IN.format(setup=setup, code=code), str(ready)], **kwargs)
        started.append(proc)
        return proc

    monkeypatch.setattr(cli.subprocess, "Popen", popen)
    original = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    returned = threading.Event()

    def deliver():
        give_up = time.monotonic() + 60
        # wait until the child is up and cmd_ui's handler is installed, so the signal goes to the handler
        while time.monotonic() < give_up and not (ready.exists() and signal.getsignal(send) is not original[send]):
            if returned.wait(0.02):  # cmd_ui is done: a signal now would hit pytest itself
                return
        sent.append(time.monotonic())
        os.kill(os.getpid(), send)

    if send is not None:
        threading.Thread(target=deliver, daemon=True).start()
    begun = time.monotonic()
    try:
        rc = cli.cmd_ui(SimpleNamespace(host="127.0.0.1", port=3999))
    finally:
        returned.set()
        for sig, handler in original.items():  # the unfixed cmd_ui left its handlers installed
            signal.signal(sig, handler)
        for proc in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
    return rc, time.monotonic() - (sent[0] if sent else begun), started[0]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("send", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ui_exits_within_a_second_or_two_of_dagster_stopping(env, monkeypatch, capsys, send):
    # It used to take 25 s: the handler's proc.wait(timeout=...) could not reap the child while the
    # main thread's proc.wait() held Popen's lock, so every stage (15 + 5 + 5 s) timed out.
    ready = env / "ready"
    rc, elapsed, proc = _run_ui_with_stand_in(monkeypatch, ready, send=send)
    assert ready.exists() and proc.returncode == 0  # the stand-in got SIGINT and stopped itself
    assert rc == 0
    assert elapsed < 5, f"tenali ui took {elapsed:.1f} s to exit after the stop signal"
    assert "Ctrl-C stops it." in capsys.readouterr().out


@pytest.mark.timeout(60)
def test_ui_port_0_picks_a_free_port_and_says_which(env, monkeypatch, capsys):
    """dagster dev reads -p 0 as "not given" (port 3000, or another it picks without saying): `tenali ui
    --port 0` hands it a port that was free and prints that one."""
    import socket

    seen = []
    monkeypatch.setattr(cli.subprocess, "Popen", lambda cmd, **kw: seen.append(cmd) or SimpleNamespace(pid=0))
    monkeypatch.setattr(cli, "_supervise", lambda proc: 0)
    assert cli.cmd_ui(SimpleNamespace(host="127.0.0.1", port=0)) == 0
    port = int(seen[0][seen[0].index("-p") + 1])
    assert port not in (0, 3000) and f"Dagster UI on http://127.0.0.1:{port} " in capsys.readouterr().out
    with socket.socket() as sock:  # free: nothing listens there (the stand-in Popen started nothing)
        sock.bind(("127.0.0.1", port))
    assert cli.cmd_ui(SimpleNamespace(host="127.0.0.1", port=3999)) == 0 and seen[1][seen[1].index("-p") + 1] == "3999"


def test_ui_returns_dagsters_exit_status_when_it_stops_by_itself(env, monkeypatch):
    rc, elapsed, _ = _run_ui_with_stand_in(monkeypatch, env / "ready", setup="sys.exit(3)")
    assert rc == 3 and elapsed < 10


@pytest.mark.timeout(60)
def test_ui_escalates_to_sigterm_and_sigkill_when_dagster_ignores_the_stop(env, monkeypatch):
    monkeypatch.setattr(cli, "STOP_SEQUENCE", ((signal.SIGINT, 1.0), (signal.SIGTERM, 1.0), (signal.SIGKILL, 5.0)))
    ignore = "signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    rc, elapsed, proc = _run_ui_with_stand_in(monkeypatch, env / "ready", send=signal.SIGTERM, setup=ignore)
    assert proc.returncode == -signal.SIGKILL and rc == 0
    assert 1.5 < elapsed < 8


def test_an_unknown_command_lists_the_model_commands_too(capsys):
    """`tenali generate` (no such command) names every command, the model's (train, serve, ...) included."""
    from tenali_pipeline.cli import MODEL_COMMANDS, main

    with pytest.raises(SystemExit) as exit_info:
        main(["generate"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown command 'generate'" in err and all(c in err for c in ("demo", "ui", *MODEL_COMMANDS))

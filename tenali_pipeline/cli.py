"""The ``tenali`` command.

    tenali demo     materialise the whole graph on sample data into the project-local instance
    tenali ui       start the Dagster UI (webserver + daemon) on that instance
    tenali info     print the resolved settings and where data lands
    tenali features INPUT OUTPUT   technical features (indicators, candlestick patterns, smart-money
                    events) for an OHLCV file
    tenali filing-sections FILE    the items of an SEC filing as JSON
    tenali lm-eval-task OUT_DIR    the held-out grounded questions as an lm-evaluation-harness task

Model-side commands (training, serving, export) will live here too and must start without dagster
installed, so dagster is imported only inside the commands that need it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent


def _prepare_environment() -> None:
    """Pin TENALI_HOME and DAGSTER_HOME to absolute paths and give the instance its dagster.yaml."""
    from .settings import SettingsError

    home = Path(os.environ.get("TENALI_HOME") or "var").expanduser().absolute()
    os.environ["TENALI_HOME"] = str(home)
    # Runs launched from `tenali ui` start in another folder (the instance's), where a relative path
    # would name a different lake than `tenali demo` and `tenali info` use.
    for name in ("TENALI_LAKE_ROOT", "TENALI_DOCUMENTS_ROOT", "TENALI_BASE_MODEL", "TENALI_WANDB_DIR"):
        value = os.environ.get(name, "").strip()
        if value and "://" not in value:
            os.environ[name] = str(Path(value).expanduser().absolute())
    named = "DAGSTER_HOME" if os.environ.get("DAGSTER_HOME") else "TENALI_HOME"
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or home / "dagster").expanduser().absolute()
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    target = dagster_home / "dagster.yaml"
    try:
        dagster_home.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            source = PACKAGE_ROOT / "instance" / "dagster.yaml"
            shutil.copyfile(source, target)
    except OSError as e:  # a traceback from mkdir would not say which setting to change
        raise SettingsError(f"cannot set up the Dagster instance in {dagster_home}: {e.strerror or e}. "
                            f"Set {named} to a folder you can write.") from None


def cmd_info(args) -> int:
    from .settings import VARIABLES, load_settings

    _prepare_environment()
    s = load_settings()
    print(f"profile       {s.profile}")
    print(f"lake          {s.lake_root}")
    print(f"dagster home  {os.environ['DAGSTER_HOME']}")
    print(f"sources       {s.sources}")
    print(f"model         {s.model} ({s.train_steps} steps)")
    from tenali_model.recipes import describe

    from .resources import TrainingResource, training_overrides

    t = TrainingResource(model=s.model, steps=s.train_steps, **training_overrides(s.train_config)).resolve(None)
    print(f"pretraining   the {t['recipe']} recipe{' + TENALI_TRAIN_CONFIG' if s.train_config else ''}: {describe(t)}")
    if args.verbose:
        print("\nvariables:")
        for name, (meaning, default) in VARIABLES.items():
            value = os.environ.get(name, "") or "-"
            if "secret" in meaning and value != "-":
                value = "(set)"  # never print a secret's value
            print(f"  {name:<24} {value:<20} {meaning} (default: {default})")
    return 0


def _count_steps(job) -> int:
    """Steps in the job's plan: assets plus checks that run as their own steps."""
    return len(list(job.graph.node_dict))


def cmd_demo(args) -> int:
    os.environ.setdefault("TENALI_PROFILE", "demo")
    if args.steps:
        os.environ["TENALI_TRAIN_STEPS"] = str(args.steps)
    _prepare_environment()
    import warnings

    import dagster as dg

    # Preview/beta notices from Dagster's own Pipes internals are not actionable for a demo user.
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    from .definitions import build_definitions
    from .settings import load_settings

    settings = load_settings()
    defs = build_definitions(settings)
    from .progress import progress_logger

    job = defs.resolve_job_def("everything").with_logger_defs({"progress": progress_logger})
    instance = dg.DagsterInstance.get()
    print(f"Tenali demo: profile {settings.profile}, lake {settings.lake_root}", flush=True)
    print(f"Dagster instance: {os.environ['DAGSTER_HOME']}\n", flush=True)
    started = time.time()
    result = job.execute_in_process(
        instance=instance,
        run_config={"loggers": {"progress": {"config": {"total": _count_steps(job)}}}},
        tags={"tenali/entrypoint": "tenali demo"},
        raise_on_error=False,
    )
    elapsed = time.time() - started
    if not result.success:
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        print(f"\nThe demo run failed at {', '.join(failed) or 'an unknown step'} after {elapsed:.0f} s "
              f"(run {result.run_id}). Open `tenali ui` to see the logs of each step.", file=sys.stderr)
        return 1
    from .defs.training.assets import LATEST_KEY
    from .lake import Lake

    latest = Lake(settings.lake_root, s3_endpoint_url=settings.s3_endpoint_url or None).read_json(LATEST_KEY)
    evaluation = instance.get_latest_materialization_event(dg.AssetKey("pretrain_evaluation"))
    meta = evaluation.asset_materialization.metadata if evaluation else {}
    print(f"\nDone in {elapsed / 60:.1f} min: every asset materialised (run {result.run_id}).")
    print(f"Checkpoint:  {latest['checkpoint']}")
    if meta:
        print(f"Validation:  loss {meta['val_loss'].value:.3f}, perplexity {meta['perplexity'].value:.1f}, "
              f"bits/byte {meta['bits_per_byte'].value:.3f}")
    stages = []
    for stage in ("pretrain", "distill", "sft", "dpo"):
        ev = instance.get_latest_materialization_event(dg.AssetKey(f"{stage}_evaluation"))
        m = ev.asset_materialization.metadata if ev else {}
        if "instruction_perplexity" in m:
            stages.append(f"{stage} {m['instruction_perplexity'].value:.1f}")
    if stages:
        print(f"Held-out instruction perplexity by stage: {', '.join(stages)}")
    release = instance.get_latest_materialization_event(dg.AssetKey("model_release"))
    if release:
        rmeta = release.asset_materialization.metadata
        print(f"Release:     {rmeta['release_id'].value} ({rmeta['stage'].value if 'stage' in rmeta else 'pretrain'}); "
              "serve it: tenali serve   (then http://127.0.0.1:8000)")
    print("Open the UI: tenali ui   (then http://127.0.0.1:3000)")
    return 0


def cmd_ui(args) -> int:
    os.environ.setdefault("TENALI_PROFILE", "demo")
    _prepare_environment()
    workspace = _write_workspace(Path(os.environ["DAGSTER_HOME"]))
    port = args.port or _free_port(args.host)  # dagster dev reads -p 0 as "not given" (3000, or one it picks unsaid)
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", args.host, "-p", str(port)]
    print(f"Dagster UI on http://{args.host}:{port} (instance {os.environ['DAGSTER_HOME']}); Ctrl-C stops it.")
    # Started from the instance folder, so Dagster does not warn about the repository's dagster.yaml,
    # and in its own process group: dagster dev does not always stop on SIGTERM, so we end the group.
    proc = subprocess.Popen(cmd, cwd=os.environ["DAGSTER_HOME"], start_new_session=True)
    return _supervise(proc)


def _free_port(host: str) -> int:
    """A port free on `host` now, for `tenali ui --port 0` (another process could take it before Dagster
    binds it; then the webserver exits saying the address is in use, and `tenali ui` with it)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _write_workspace(dagster_home: Path) -> Path:
    """The instance's own workspace file: Tenali's code as location `tenali`, from whatever folder `tenali ui`
    starts in (a workspace.yaml there may be another project's, and `-m` would name the location differently,
    so its schedules' and sensors' state would not carry over)."""
    import yaml

    location = {"module_name": "tenali_pipeline.definitions", "attribute": "defs", "location_name": "tenali",
                "working_directory": str(PACKAGE_ROOT.parent)}
    target = dagster_home / "workspace.yaml"
    tmp = target.with_name(f".workspace.yaml.{os.getpid()}")
    tmp.write_text(yaml.safe_dump({"load_from": [{"python_module": location}]}))
    os.replace(tmp, target)
    return target


# How `tenali ui` stops Dagster: each signal goes to the child's process group, and the next one
# follows if the group leader is still alive after the grace. dagster dev shuts down cleanly on SIGINT,
# in a second or two; the graces add up to under docker stop's 10 s before it kills this wrapper.
STOP_SEQUENCE = ((signal.SIGINT, 6.0), (signal.SIGTERM, 2.0), (signal.SIGKILL, 1.0))
POLL_SECONDS = 0.25


def _supervise(proc: subprocess.Popen) -> int:
    """Wait for `proc` (a session leader); on SIGINT/SIGTERM stop its process group and return 0.

    The handler only forwards the stop and records it; waiting and escalating happen here, in the
    main thread. (Waiting in the handler cannot work: the main thread's interrupted proc.wait() holds
    Popen's lock, so the handler's wait could never reap the child and timed out at every stage,
    25 s in all, even when Dagster had exited within a second.)
    """
    stopping: list[float] = []

    def signal_group(sig) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(*_):
        if stopping:
            return
        stopping.append(time.monotonic())
        signal_group(STOP_SEQUENCE[0][0])

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stage, deadline = 0, None
        while True:
            try:
                code = proc.wait(timeout=POLL_SECONDS)  # returns within ~50 ms of the child's exit
                break
            except subprocess.TimeoutExpired:
                pass
            if not stopping:
                continue
            if deadline is None:
                deadline = stopping[0] + STOP_SEQUENCE[0][1]
            if time.monotonic() < deadline:
                continue
            stage += 1
            if stage < len(STOP_SEQUENCE):
                sig, grace = STOP_SEQUENCE[stage]
                signal_group(sig)
                deadline = time.monotonic() + grace
            else:  # not even SIGKILL ended it within its grace: keep waiting, as before
                deadline = float("inf")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopping else code


# Model-side commands run in images that have no dagster: hand them to tenali_model's CLI before
# anything here imports the pipeline.
MODEL_COMMANDS = ("train", "evaluate", "distill", "sft", "dpo", "export-hf", "import-hf", "plan", "serve")


def cmd_lm_eval_task(args) -> int:
    """The lake's grounded questions as an lm-evaluation-harness task, and the command that runs it."""
    from .defs.posttraining.assets import QUESTIONS_KEY
    from .lake import Lake
    from .lm_eval_task import TaskError, harness_command, write_task
    from .settings import load_settings

    settings = load_settings()
    root = args.lake or settings.lake_root
    lake = Lake(root, s3_endpoint_url=settings.s3_endpoint_url or None)
    if not lake.exists(QUESTIONS_KEY):
        print(f"tenali lm-eval-task: error: {lake.uri(QUESTIONS_KEY)} does not exist: materialise the "
              "grounded_instructions asset first (`tenali demo` does), or name the lake that holds it (--lake)",
              file=sys.stderr)
        return 2
    try:
        info = write_task(lake.read_parquet(QUESTIONS_KEY), args.out_dir, args.split)
    except TaskError as e:
        print(f"tenali lm-eval-task: error: {e}", file=sys.stderr)
        return 2
    model_dir = None
    if lake.is_local:
        from tenali_model.serve.loading import LoadError, latest_release_dir
        try:
            model_dir = latest_release_dir(lake.root)
        except LoadError as e:  # the command then names a placeholder; say why (no release yet, a bad pointer)
            print(f"note: no release to name in the command: {e}", file=sys.stderr)
    kinds = ", ".join(f"{k} {n}" for k, n in info["by_kind"].items())
    print(f"Wrote {info['questions']} {args.split} questions ({kinds}) as the task {info['task']}: {info['yaml']}")
    print("Score a Hugging Face model folder on them with lm-evaluation-harness (pip install lm-eval):")
    print(f"  {harness_command(args.out_dir, model_dir)}")
    return 0


def _serve_lake_default() -> None:
    """`tenali serve` with no PATH serves the latest release in this profile's lake (settings.py, no dagster)."""
    if not os.environ.get("TENALI_LAKE_ROOT"):
        from .settings import SettingsError, load_settings
        try:
            os.environ["TENALI_LAKE_ROOT"] = load_settings().lake_root
        except SettingsError as e:  # tenali serve then asks for PATH or --lake; say why the lake is unknown
            print(f"tenali serve: no lake from the settings: {e}", file=sys.stderr)


def _positive_int(text: str) -> int:
    """--steps: refused here, under its own name, rather than later as TENALI_TRAIN_STEPS."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of steps of at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in MODEL_COMMANDS:
        if argv[0] == "serve":
            _serve_lake_default()
        from tenali_model.cli import main as model_main

        return model_main(argv)
    parser = argparse.ArgumentParser(
        prog="tenali", description="Build a finance-domain language model from scratch.",
        epilog=f"Model commands (no dagster needed): {', '.join(MODEL_COMMANDS)}; see `tenali train --help` etc.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="materialise the whole graph on sample data (a few minutes on 2 CPU cores)")
    p.add_argument("--steps", type=_positive_int, default=0,
                   help="pretraining steps (default: TENALI_TRAIN_STEPS or 300)")
    p.set_defaults(fn=cmd_demo)
    p = sub.add_parser("ui", help="start the Dagster UI on the project-local instance")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000, help="0: a free port, printed (default 3000)")
    p.set_defaults(fn=cmd_ui)
    from .technicals import cli as technicals_cli
    from .text import filings

    technicals_cli.add_parser(sub)

    p = sub.add_parser("filing-sections", help="print an SEC filing's items (10-K, 10-Q, 8-K) as JSON")
    filings.add_arguments(p)
    p.set_defaults(fn=filings.run)
    p = sub.add_parser("lm-eval-task", help="write the held-out grounded questions as an lm-evaluation-harness "
                                            "task, to score any model on them")
    p.add_argument("out_dir", help="folder for tenali_grounded.yaml and its questions")
    p.add_argument("--split", choices=("val", "train", "all"), default="val",
                   help="which questions: the held-out ones the pipeline evaluates on (default), or more")
    p.add_argument("--lake", help="lake root that holds the questions (default: this profile's)")
    p.set_defaults(fn=cmd_lm_eval_task)
    p = sub.add_parser("info", help="print the resolved settings")
    p.add_argument("-v", "--verbose", action="store_true", help="also list every environment variable")
    p.set_defaults(fn=cmd_info)
    if argv and not argv[0].startswith("-") and argv[0] not in sub.choices:  # argparse would list the pipeline's only
        parser.error(f"unknown command {argv[0]!r}: the pipeline's are {', '.join(sub.choices)}; "
                     f"the model's (no dagster needed) are {', '.join(MODEL_COMMANDS)}")
    args = parser.parse_args(argv)
    from tenali_model.config import ConfigError

    from .settings import SettingsError

    try:
        return args.fn(args)
    except (SettingsError, ConfigError) as e:  # a setting to fix: its message, not a traceback
        print(f"tenali {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tenali filing-sections F | head`: the reader stopped early, nothing went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not fail again
        return 1


if __name__ == "__main__":
    sys.exit(main())

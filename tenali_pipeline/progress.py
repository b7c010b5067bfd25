"""A compact terminal logger for `tenali demo`: one line per finished step, plus the steps' own logs.

Dagster's console logger prints either too little (INFO: no step boundaries) or far too much
(DEBUG: every engine event). This logger reads the structured event on each record and prints
``[ 7/41] clean_market_prices  0.3s`` style progress, failed checks, and the INFO messages that
assets log themselves (training progress among them).
"""

from __future__ import annotations

import logging
import sys
import time

import dagster as dg


class ProgressHandler(logging.Handler):
    def __init__(self, total: int, stream=None):
        super().__init__(level=logging.DEBUG)
        self.total, self.stream = total, stream or sys.stdout
        self.started: dict[str, float] = {}
        self.done = 0

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        step = meta.get("step_key") or ""
        if event is None:
            if record.levelno >= logging.INFO and step:
                self._print(f"        {step}: {meta.get('orig_message', record.getMessage())}")
            return
        kind = event.event_type_value
        if kind == "STEP_START":
            self.started[step] = time.time()
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            self.done += 1
            now = time.time()
            took = now - self.started.get(step, now)
            width = len(str(self.total))
            mark = "" if kind == "STEP_SUCCESS" else "  FAILED"
            self._print(f"[{self.done:>{width}}/{self.total}] {step:<40} {took:6.1f}s{mark}")
            if kind == "STEP_FAILURE" and event.step_failure_data and event.step_failure_data.error:
                self._print(event.step_failure_data.error.to_string())
        elif kind == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            if not data.passed:
                self._print(f"        check {data.asset_check_key.name} on "
                            f"{data.asset_key.to_user_string()} FAILED")
        elif kind == "STEP_UP_FOR_RETRY":
            self._print(f"        {step}: up for retry")


@dg.logger(config_schema={"total": dg.Field(int, default_value=0)},
           description="One line per finished step, with the steps' own INFO logs.")
def progress_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    log = logging.Logger("tenali.progress", level=logging.DEBUG)
    log.addHandler(ProgressHandler(init_context.logger_config["total"]))
    return log

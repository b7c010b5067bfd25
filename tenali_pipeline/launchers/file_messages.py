"""A Pipes message reader for local launches that only parses whole lines.

Dagster's `PipesTempFileMessageReader` tails the messages file with `readline()` and hands every
line it gets to `json.loads`, including a line the trainer is still writing: `readline()` at the
end of a growing file returns what is there so far. A long message (a materialisation with the loss
curve in its metadata) then fails with a JSONDecodeError in the reader thread, and every message
after it is lost (seen once in `tests/pipeline/test_end_to_end.py`: "Expecting value: line 1
column 63"). This reader keeps a partial line until its newline arrives, and reads the file to its
end once more after the process has exited, so the last messages are never dropped either.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg
from dagster_pipes import PipesDefaultMessageWriter


def whole_lines(path: str, finished: Callable[[], bool], poll: float = 0.01) -> Iterator[str]:
    """Complete lines of a file that another process appends to, until `finished()` is true and the
    file has been read to its end after that; a last line without its newline is yielded then."""
    partial = ""
    with open(path, encoding="utf-8") as f:
        while True:
            done = finished()  # read before draining: what was written before this is read below
            while chunk := f.readline():
                partial += chunk
                if partial.endswith("\n"):
                    yield partial
                    partial = ""
            if done:
                break
            time.sleep(poll)
    if partial.strip():
        yield partial


class WholeLineMessageReader(dg.PipesMessageReader):
    """`PipesTempFileMessageReader`'s job (a temporary file the child's default Pipes writer appends
    to), reading whole lines only (see the module doc)."""

    @contextmanager
    def read_messages(self, handler) -> Iterator[dict]:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "messages")
            open(path, "w", encoding="utf-8").close()
            closed = threading.Event()
            thread = threading.Thread(target=self._read, args=(path, handler, closed), daemon=True)
            thread.start()
            try:
                yield {PipesDefaultMessageWriter.FILE_PATH_KEY: path,
                       PipesDefaultMessageWriter.INCLUDE_STDIO_IN_MESSAGES_KEY: False}
            finally:
                closed.set()
                thread.join()

    @staticmethod
    def _read(path: str, handler, closed: threading.Event) -> None:
        try:
            for line in whole_lines(path, closed.is_set):
                handler.handle_message(json.loads(line))
        except Exception:  # noqa: BLE001 - reported to Dagster, which fails the step with it
            handler.report_pipes_framework_exception("WholeLineMessageReader reader thread", sys.exc_info())

    def no_messages_debug_text(self) -> str:
        return "Attempted to read messages from a local temporary file (whole lines only)."

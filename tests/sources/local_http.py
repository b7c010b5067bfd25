"""A throwaway HTTP server on 127.0.0.1 for the replay tests in this folder.

`respond(handler)` gets each GET's `BaseHTTPRequestHandler` (read `.path`, `.headers`) and returns
(status, headers, body); Content-Length is added. Imported as a plain module: pytest's default
import mode puts this folder (no __init__.py) on sys.path for its test files.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Respond = Callable[[BaseHTTPRequestHandler], "tuple[int, dict[str, str], bytes]"]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that gave up (a timeout test) closes the socket: not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LocalServer:
    def __init__(self, respond: Respond):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                status, headers, body = respond(self)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.base = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        """Stop serving and free the port; calling it again does nothing."""
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

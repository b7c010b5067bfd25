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


class RawServer:
    """A socket server on 127.0.0.1 that sends `answer(path)`'s bytes as they are (status line and
    headers included) and hangs up: for what an HTTP server class will not send, such as a body shorter
    than its Content-Length. `asked` lists the request paths, in order."""

    def __init__(self, answer: Callable[[str], bytes]):
        import socket

        self.asked: list[str] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(5)
        self.base = f"http://127.0.0.1:{self._listener.getsockname()[1]}"

        def serve():
            while True:
                try:
                    conn, _ = self._listener.accept()
                except OSError:  # closed
                    return
                self.asked.append(conn.recv(65536).split(b" ")[1].decode())
                conn.sendall(answer(self.asked[-1]))
                conn.close()

        threading.Thread(target=serve, daemon=True).start()

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc) -> None:
        self._listener.close()

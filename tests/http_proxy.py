"""An HTTP proxy in front of a real `mlflow server`: it sees every request (headers included) and can
answer late, after the server has done the work — a request that lands but whose answer is lost."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Proxy:
    url: str
    seen: list[Seen] = field(default_factory=list)
    late: dict[str, int] = field(default_factory=dict)  # path suffix -> answers still to delay
    delay_s: float = 0.0

    def answer_late(self, path_suffix: str, times: int, delay_s: float) -> None:
        """Forward the next `times` requests to `path_suffix`, then wait `delay_s` before answering."""
        self.late[path_suffix] = times
        self.delay_s = delay_s

    def requests_to(self, path_suffix: str) -> list[Seen]:
        return [s for s in self.seen if s.path.split("?")[0].endswith(path_suffix)]


@contextmanager
def proxy_to(target: str) -> Iterator[Proxy]:
    """A proxy on a free port of 127.0.0.1 forwarding to `target` (`http://host:port`)."""
    upstream = urlsplit(target)
    state = Proxy(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            with lock:
                state.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
                suffix = next(
                    (s for s, n in state.late.items() if n > 0 and self.path.split("?")[0].endswith(s)), None
                )
                if suffix is not None:
                    state.late[suffix] -= 1
            connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            connection.request(self.command, self.path, body=body, headers=headers)
            answer = connection.getresponse()
            payload = answer.read()
            if suffix is not None:
                time.sleep(state.delay_s)  # done upstream; the client has given up waiting
            try:
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and went away
            finally:
                connection.close()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()

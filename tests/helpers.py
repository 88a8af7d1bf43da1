"""Helpers shared by test modules: a local OpenAI-compatible endpoint's plumbing, and the CLI
run in-process. (Fixtures live in conftest.py; this is plain code the tests import.)"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatHandler(BaseHTTPRequestHandler):
    """Base of the chat-completions endpoints the tests run on 127.0.0.1: quiet, reads the JSON
    request, writes JSON (or raw bytes) replies. Subclasses implement ``do_POST``."""

    def log_message(self, *args):
        pass

    def read_body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def reply(
        self, status: int, payload: dict | bytes, headers: dict | None = None, length: int | None = None
    ) -> None:
        """Send ``payload`` (a dict is JSON-encoded); ``length`` may promise more bytes than are sent."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data) if length is None else length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def completion(text: str) -> dict:
    """A chat-completions response body carrying ``text``."""
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


def serve(handler: type, server_class: type = ThreadingHTTPServer) -> tuple[ThreadingHTTPServer, str]:
    """Start ``handler`` on a free port of 127.0.0.1 in a daemon thread; returns (server, base URL)."""
    httpd = server_class(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def invoke(*args: str) -> subprocess.CompletedProcess:
    """The CLI in-process (for commands whose imports would take seconds in a subprocess); exit
    code and stderr as a subprocess would give them."""
    from click.testing import CliRunner

    from qcrd_plugin.cli import main

    saved = dict(os.environ)  # --quiet and the device set variables (TQDM_DISABLE, ...) for the process
    try:
        result = CliRunner().invoke(main, list(args))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    # sys.exit(2) from _fail arrives as SystemExit; any other exception would be a traceback.
    assert isinstance(result.exception, (SystemExit, type(None))), f"uncaught {result.exception!r}\n{result.stderr}"
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)

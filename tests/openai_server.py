"""A small OpenAI-compatible chat-completions server on 127.0.0.1 for tests and benchmarks.

    with OpenAIServer(delay=0.2, script=[("status", 429, {"Retry-After": "0.3"}), "ok"]) as server:
        server.base_url     # http://127.0.0.1:PORT/v1
        server.requests     # (time, headers, body) of every request received
        server.finished     # how many it has finished (answered, or worked through for a client that left)

Like real local servers it can be slow in the ways that matter: `workers=1` works on one request at a time
and queues the rest (a one-slot llama.cpp, transformers serve), and a request whose client gave up is
still worked through to the end; `max_n=1` ignores `n` (transformers serve), `max_n=2` caps it.

Each incoming request takes the next action from `script` (then "ok" forever):
    "ok"                           a normal reply: choice i says "reply <i> to: <last user message>"
    ("status", code, headers[, message])  an error status with an OpenAI-style error body
    ("sleep", seconds)             answer "ok" late (a timeout for the client)
    ("body", text)                 200 with a malformed body
    ("json", obj)                  200 with this JSON (e.g. without "choices")
    ("reply", text)                a normal reply with this text
`reply(body, i)`, where given, writes choice i of every "ok" reply from the request's body instead (replies that
depend on what was asked, not on the order concurrent requests arrive in).
It counts requests in flight, queued ones included (`max_in_flight`). Real sockets, real HTTP/1.1
keep-alive, real JSON.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class OpenAIServer:
    def __init__(self, delay: float = 0.0, script: list | None = None, model: str = "test-model",
                 workers: int | None = None, max_n: int | None = None, reply=None):
        self.delay = delay
        self.reply = reply
        self.script = list(script or [])
        self.model = model
        self.max_n = max_n
        self.workers = threading.Semaphore(workers) if workers else None
        self.requests: list[tuple[float, dict, dict]] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.finished = 0
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def next_action(self):
        with self.lock:
            return self.script.pop(0) if self.script else "ok"

    def __enter__(self) -> "OpenAIServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    body = {}
                with server.lock:
                    server.requests.append((time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if server.workers:
                        with server.workers:  # queued until a worker is free, like a one-slot server
                            self.respond(body, server.next_action())
                    else:
                        self.respond(body, server.next_action())
                finally:
                    with server.lock:
                        server.in_flight -= 1
                        server.finished += 1

            def respond(self, body: dict, action):
                if server.delay:
                    time.sleep(server.delay)
                kind = action if isinstance(action, str) else action[0]
                if kind == "status":
                    _, code, headers, *message = action
                    text = message[0] if message else f"scripted {code}"
                    payload = {"error": {"message": text, "type": "test", "code": code}}
                    return self.send(code, json.dumps(payload).encode(), headers)
                if kind == "sleep":
                    time.sleep(action[1])
                if kind == "body":
                    return self.send(200, action[1].encode())
                if kind == "json":
                    return self.send(200, json.dumps(action[1]).encode())
                text = action[1] if kind == "reply" else None
                return self.send(200, json.dumps(self.completion(body, text)).encode())

            def completion(self, body: dict, text: str | None) -> dict:
                user = next((m["content"] for m in reversed(body.get("messages", [])) if m["role"] == "user"), "")
                n = min(body.get("n") or 1, server.max_n or 1_000_000)
                def content(i: int) -> str:
                    if text:
                        return text
                    return server.reply(body, i) if server.reply else f"reply {i} to: {user[:80]}"

                choices = [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": content(i)}}
                           for i in range(n)]
                return {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                        "model": body.get("model", server.model), "choices": choices,
                        "usage": {"prompt_tokens": 11, "completion_tokens": 5 * n, "total_tokens": 11 + 5 * n}}

            def send(self, code: int, data: bytes, headers: dict | None = None):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        ThreadingHTTPServer.daemon_threads = True
        ThreadingHTTPServer.request_queue_size = 256
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        return False


if __name__ == "__main__":  # run it standalone: python tests/openai_server.py DELAY_SECONDS
    import sys

    with OpenAIServer(delay=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0) as srv:
        print(srv.base_url, flush=True)
        threading.Event().wait()

"""A tiny OpenAI-compatible HTTP server for tests and benchmarks: scripted answers and scripted faults.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) for httpx. Each chat request is handed to a
`respond(index, body)` function that returns an `Action`: a normal answer, an HTTP error, a truncated body, a
dropped connection, a slow answer, or a refusal of the `json_schema` response format. By default it replays a
fixed answer per report text (`answers`), or an empty answer.

Run standalone (benchmarks): `python tests/extract/fake_server.py [--port 0] [--answer JSON]` prints `PORT <n>`
then serves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

#: An answer with no finding, in the default (citing) format.
EMPTY_ANSWER = json.dumps({"lesions": [], "normal": [], "resected": []})
REPORT_PREFIX = "Report:\n"
_SENTENCE_NUMBER = re.compile(r"\[\d+\] ")


@dataclass(frozen=True)
class Action:
    """What the server does with one chat request.

    kind: `answer` | `status` | `truncated` | `drop` | `reject_json_schema`.
    """

    kind: str = "answer"
    content: Optional[str] = None  # answer text (None: replay)
    finish_reason: str = "stop"
    status: int = 200
    delay_s: float = 0.0


def report_of(body: dict[str, Any]) -> str:
    """The report text of a chat request (the last user turn that carries a report), without the sentence
    numbers the citing format shows."""
    for message in reversed(body.get("messages", [])):
        content = message.get("content", "")
        if message.get("role") == "user" and content.startswith(REPORT_PREFIX):
            return _SENTENCE_NUMBER.sub("", content[len(REPORT_PREFIX):])
    return ""


class FakeLLMServer:
    """Serve on 127.0.0.1 in a background thread; use as a context manager.

    Args:
        respond: `(request_index, body) -> Action`; default answers every request by replay.
        answers: report text → answer JSON used by replay (others get an empty answer).
        model: the id listed by `/v1/models`.
    """

    def __init__(self, respond: Callable[[int, dict], Action] | None = None,
                 answers: dict[str, str] | None = None, model: str = "fake-model", port: int = 0,
                 fixed_answer: str | None = None) -> None:
        self.respond = respond or (lambda i, body: Action())
        # Benchmarks: the same answer to every chat request, without reading or keeping the request (the
        # server's CPU shares the client's cores, and a GPU server's would not).
        self._fixed_reply = None if fixed_answer is None else json.dumps({
            "id": "cmpl-fixed", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": fixed_answer},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": len(fixed_answer) // 4}}).encode()
        self.answers = answers or {}
        self.model = model
        self.port = port
        self.requests: list[dict[str, Any]] = []  # bodies of chat requests, in arrival order
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "FakeLLMServer":
        self._thread = threading.Thread(target=self._serve_thread, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _serve_thread(self) -> None:
        asyncio.run(self.serve())

    async def serve(self, on_ready: Callable[[int], None] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=1024)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        if on_ready is not None:
            on_ready(self.port)
        async with server:
            await self._stop.wait()

    # -- HTTP ---------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                if not await self._route(method, path, body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass  # client went away, or the server is shutting down
        finally:
            writer.close()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, payload: bytes, length: int | None = None) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}.get(status, "X")
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload) if length is None else length}\r\n\r\n")
        writer.write(head.encode() + payload)
        await writer.drain()

    async def _route(self, method: str, path: str, raw: bytes, writer: asyncio.StreamWriter) -> bool:
        if method == "GET" and path.rstrip("/").endswith("/models"):
            await self._send(writer, 200, json.dumps({"object": "list", "data": [{"id": self.model}]}).encode())
            return True
        if not (method == "POST" and path.rstrip("/").endswith("/chat/completions")):
            await self._send(writer, 404, b'{"error": "not found"}')
            return True
        if self._fixed_reply is not None:
            await self._send(writer, 200, self._fixed_reply)
            return True
        body = json.loads(raw)
        with self._lock:
            index = len(self.requests)
            self.requests.append(body)
        action = self.respond(index, body)
        if action.delay_s:
            await asyncio.sleep(action.delay_s)
        if action.kind == "drop":
            return False
        if action.kind == "status":
            await self._send(writer, action.status, json.dumps({"error": {"message": "scripted failure"}}).encode())
            return True
        if action.kind == "reject_json_schema" and body.get("response_format", {}).get("type") == "json_schema":
            msg = {"detail": [{"loc": ["body", "response_format", "type"], "msg": "Input should be 'text' or "
                               "'json_object'", "input": "json_schema"}]}
            await self._send(writer, action.status if action.status != 200 else 422, json.dumps(msg).encode())
            return True
        content = action.content if action.content is not None else self.answers.get(report_of(body), EMPTY_ANSWER)
        reply = json.dumps({
            "id": f"cmpl-{index}", "object": "chat.completion", "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": action.finish_reason}],
            "usage": {"prompt_tokens": sum(len(m.get("content", "")) // 4 for m in body.get("messages", [])),
                      "completion_tokens": len(content) // 4},
        }).encode()
        if action.kind == "truncated":
            await self._send(writer, 200, reply[: len(reply) // 2], length=len(reply))
            return False
        await self._send(writer, 200, reply)
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--answer", default=None, help="answer JSON for every request (default: empty answer)")
    args = parser.parse_args()
    server = FakeLLMServer(port=args.port, fixed_answer=args.answer)
    asyncio.run(server.serve(on_ready=lambda port: print(f"PORT {port}", flush=True)))


if __name__ == "__main__":
    main()

"""A container's log as a LogReader: the docker SDK's blocking log stream pumped by a thread into a queue."""

from __future__ import annotations

import queue
import threading
from typing import Any

__all__ = ["ContainerLogReader", "TextLogReader"]

_END = None  # queued by the pump when the stream ends


class ContainerLogReader:
    """`container.logs(stream=True)` read without blocking; close() ends the stream (the pump thread with it)."""

    def __init__(self, container: Any, *, tail_lines: int, since_wall_s: float | None, follow: bool) -> None:
        kwargs: dict[str, Any] = {"stream": True, "follow": follow, "stdout": True, "stderr": True}
        if since_wall_s is not None:
            kwargs["since"] = since_wall_s
        else:
            kwargs["tail"] = max(1, tail_lines)
        self._stream = container.logs(**kwargs)
        self._chunks: queue.Queue[bytes | None] = queue.Queue()
        self._ended = False
        self._pump = threading.Thread(target=self._run, name="gpuserve-docker-logs", daemon=True)
        self._pump.start()

    def _run(self) -> None:
        try:
            for chunk in self._stream:
                self._chunks.put(chunk)
        except Exception:  # closed by close(), or the engine went away: the log ends either way
            pass
        finally:
            self._chunks.put(_END)

    def read(self) -> bytes | None:
        if self._ended:
            return None
        parts: list[bytes] = []
        while True:
            try:
                chunk = self._chunks.get_nowait()
            except queue.Empty:
                return b"".join(parts)
            if chunk is _END:
                self._ended = True
                return b"".join(parts) or None
            parts.append(chunk)

    def close(self) -> None:
        close = getattr(self._stream, "close", None)  # the SDK's CancellableStream; a plain generator has it too
        if close is not None:
            try:
                close()
            except Exception:  # an already-closed socket: nothing left to end
                pass


class TextLogReader:
    """What is left of a removed container's log (kept as text): read once, then ended."""

    def __init__(self, text: str) -> None:
        self._text: bytes | None = text.encode()

    def read(self) -> bytes | None:
        out, self._text = self._text, None
        return out

    def close(self) -> None:
        self._text = None

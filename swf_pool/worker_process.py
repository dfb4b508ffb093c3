"""One worker process as the coordinator sees it: the process, its pipe, its shared `Slot`,
and the tasks sent to it whose results have not come back."""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

from .handlers import Registry
from .worker import Slot, Task, child_main, signals_held

READ_BYTES = 256 * 1024


class WorkerProcess:
    """One worker process and what the coordinator sent it."""

    def __init__(
        self,
        context: Any,
        app: str | Registry,
        worker_id: str,
        max_tasks: int | None,
        concurrency: int,
        index: int,
    ) -> None:
        self.slot = Slot.create(context, concurrency)
        self.conn, child_end = context.Pipe(duplex=True)
        self.process = context.Process(
            target=child_main,
            name=f"swf-worker-{index}",
            args=(child_end, app, worker_id, self.slot.array, self.slot.lock, max_tasks),
            daemon=True,
        )
        with signals_held():  # SIGTERM to our process group is ours to handle, not the worker's
            self.process.start()
        child_end.close()
        # our end never blocks: a worker busy in a long handler reads its pipe only later, and
        # what it cannot take yet waits in `outbuf` (written when the pipe has room again)
        self.fd = self.conn.fileno()
        os.set_blocking(self.fd, False)
        self.outbuf = bytearray()
        self.sent: dict[int, Task] = {}  # seq -> task, until its result arrives
        self.cancels: set[int] = set()  # sent and cancelled: flag it in the slot once it runs
        self.inbuf = bytearray()

    def post(self, message: Any) -> None:
        """Send one message in multiprocessing's framing (the worker reads it with `recv`):
        what the pipe takes now is written, the rest waits for `write()`."""
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        size = len(data)
        header = struct.pack("!i", size) if size < 0x7FFFFFFF else struct.pack("!iQ", -1, size)
        self.outbuf += header + data
        self.write()

    def write(self) -> bool:
        """Write what the pipe takes of `outbuf`; True once all is written. A worker that
        died takes nothing: its sentinel tells, and what it was sent goes back to the queue."""
        while self.outbuf:
            try:
                written = os.write(self.fd, self.outbuf)
            except BlockingIOError:
                return False
            except OSError:
                self.outbuf.clear()
                break
            del self.outbuf[:written]
        return True

    def messages(self) -> list[Any]:
        """Every message the worker has sent so far, read in bulk (a few reads per wake-up, not
        two per message): multiprocessing frames, a 4-byte big-endian length then a pickle."""
        while True:
            try:
                chunk = os.read(self.fd, READ_BYTES)
            except BlockingIOError:
                break  # all read
            except OSError:
                break  # the process is gone; its sentinel tells the rest
            if not chunk:
                break
            self.inbuf += chunk
        out = []
        view = memoryview(self.inbuf)
        at = 0
        while len(view) - at >= 4:
            (size,) = struct.unpack_from("!i", view, at)
            if len(view) - at - 4 < size:
                break
            out.append(pickle.loads(view[at + 4 : at + 4 + size]))
            at += 4 + size
        view.release()
        del self.inbuf[:at]
        return out

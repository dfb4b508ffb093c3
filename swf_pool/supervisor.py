"""One `swf-pool run`, several coordinators: where one coordinator process is the limit (its
loop and its statements share one interpreter), `--coordinators N` starts N of them, each a
`swf-pool run` with its share of the worker processes, and supervises them: the user still
starts one command, stops it with one signal, and reads one exit status.

Each child is the same command with `--coordinators 1`, `--processes` set to its share and,
when one was given, `--worker-id` suffixed with its number. Each child watches a pipe from
this process: when it closes (a signal here, or this process gone) the child stops as
gracefully as on a signal of its own, and a signal the whole process group got (systemd, a
container runtime, Ctrl-C) reaches it once, directly. A second signal here kills them all at
once. The exit status is the worst of theirs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

from .errors import ConfigError

log = logging.getLogger("swf_pool")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
SUPERVISOR_FD = "SWF_SUPERVISOR_FD"  # in a child: the pipe that closes when it should stop


def shares(processes: int, coordinators: int) -> list[int]:
    """Worker processes per coordinator, as even as can be."""
    if coordinators > processes:
        raise ConfigError(
            f"--coordinators {coordinators} needs at least as many --processes, got {processes}"
        )
    return [processes // coordinators + (i < processes % coordinators) for i in range(coordinators)]


def supervise(argv: Sequence[str], processes: int, coordinators: int, worker_id: str | None) -> int:
    """Run `coordinators` children of `swf-pool <argv>` and wait for all of them."""
    split = shares(processes, coordinators)
    watched, stop = os.pipe()
    children = []
    for number, share in enumerate(split, start=1):
        extra = ["--coordinators", "1", "--processes", str(share)]
        if worker_id:
            extra += ["--worker-id", f"{worker_id}-{number}"]
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "swf_pool", *argv, *extra],
                pass_fds=(watched,),
                env={**os.environ, SUPERVISOR_FD: str(watched)},
            )
        )
    os.close(watched)
    log.info(
        "%d coordinators (pids %s) with %s worker processes",
        coordinators,
        ", ".join(str(c.pid) for c in children),
        " + ".join(map(str, split)),
    )
    signals: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        signals.append(signum)
        if len(signals) == 1:
            log.info("%s: stopping the coordinators gracefully", signal.Signals(signum).name)
            os.close(stop)
        else:
            for child in children:
                child.kill()  # their workers notice the hang-up and exit
            os._exit(130)

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    codes = [child.wait() for child in children]
    return max(codes, key=lambda code: (code != 0, abs(code)))


def watch_supervisor(stop: Callable[[], None]) -> None:
    """In a child: call `stop` when the supervisor's pipe closes (if there is one)."""
    fd = os.environ.pop(SUPERVISOR_FD, None)
    if fd is None:
        return

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(int(fd), 1):
                pass
        log.info("the supervisor is stopping: stopping gracefully")
        stop()

    threading.Thread(target=watch, name="swf-supervisor", daemon=True).start()

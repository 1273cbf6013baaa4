"""Removes a Ray-backend worker's container once the actor that started it is gone (run as a script; the standard library and the docker SDK only).

`python container_guard.py ACTOR_PID CONTAINER_ID`: detaches at once (a grandchild of the actor,
in its own session, so whatever cleans up the actor's children does not reach it and the actor's
call returns), waits on a pidfd of the actor's process without polling, then force-removes the
container. A container the actor already removed (a clean stop) is simply not found.
"""

from __future__ import annotations

import os
import select
import sys
import time


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def guard(actor_pid: int, container_id: str) -> None:
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    try:
        fd: int | None = os.pidfd_open(actor_pid)
    except ProcessLookupError:
        fd = None  # already gone
    except (OSError, AttributeError):  # no pidfds (Linux before 5.3): poll
        fd = None
        while _alive(actor_pid):
            time.sleep(0.5)
    if fd is not None:
        select.select([fd], [], [])
    # Run as a script, this file's folder is first on sys.path, and gpuserve's own docker.py there
    # would shadow the docker SDK.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        import docker

        docker.from_env(timeout=30).containers.get(container_id).remove(force=True)
    except Exception:
        pass  # not found: removed by the actor's stop


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: container_guard.py ACTOR_PID CONTAINER_ID")
    guard(int(sys.argv[1]), sys.argv[2])

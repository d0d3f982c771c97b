"""A fork server for the SIGKILL test of ``host.auth.save``'s atomic replace.

Run as ``python -m tests.support.auth_crash_child DIR``. For each line ``FIRST`` read on
stdin it forks a worker that saves :data:`NAME` in DIR through
:meth:`hostd.credentials.CredentialStore.save` (the code ``host.auth.save``
runs) in a loop: versions FIRST, FIRST+1, … with growing content, printing ``saved V``
after each save returns. The server prints ``pid P`` once the worker exists, reaps it
when it dies and prints ``reaped P STATUS``. The test kills the worker with SIGKILL.

Forking from a process that has already imported everything makes each round cost a
fork instead of an interpreter start, so the test can afford hundreds of kills.
"""

from __future__ import annotations

import os
import sys

from hostd.credentials import CredentialStore

NAME = "crash.json"
STEP = 4096  # bytes of padding added by each version of one worker
MAX_STEPS = 512


def version_text(version: int, step: int) -> bytes:
    """The exact bytes of one version; ``step`` counts saves within one worker."""
    pad = b"x" * (1024 + STEP * min(step, MAX_STEPS))
    return b'{"type": "claude", "version": %d, "step": %d, "pad": "%s"}' % (version, step, pad)


def _worker(store: CredentialStore, first: int) -> None:
    step = 0
    while True:
        version = first + step
        store.save(NAME, version_text(version, step))
        os.write(1, b"saved %d\n" % version)  # one write: whole line or nothing
        step += 1


def main() -> int:
    store = CredentialStore(sys.argv[1])
    for line in sys.stdin:
        first = int(line)
        pid = os.fork()
        if pid == 0:
            try:
                _worker(store, first)
            except BaseException as e:  # a failed save must show in the test, not vanish
                os.write(1, f"error {type(e).__name__}: {e}\n".encode())
            finally:
                os._exit(1)
        os.write(1, b"pid %d\n" % pid)
        _, status = os.waitpid(pid, 0)
        os.write(1, b"reaped %d %d\n" % (pid, status))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

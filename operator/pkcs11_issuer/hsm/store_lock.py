"""One token's object store, shared between object searches and exclusive to object writes.

SoftHSM 2.6 keeps every object in a file and re-reads a file whenever it changed on disk. A
C_FindObjects walk touches every object on the token, so one that runs while another thread
creates an object re-reads that object half-written and throws away what the creating thread
has set so far: the creation then fails with CKR_TEMPLATE_INCONSISTENT or CKR_GENERAL_ERROR,
and may leave a half-made object behind. Two creations at once fail the same way (SoftHSMv2
issues 573 and 688). So within this process, per token, searches run together but never
while an object is created or destroyed, and writes run one at a time. Signing with an
object already found needs neither, and stays concurrent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ObjectStoreLock:
    """A readers-writer lock that prefers writers, so that a steady stream of searches
    cannot starve key generation. The writing thread may search inside its own write."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writers_waiting = 0
        self._writer: int | None = None

    @contextmanager
    def searching(self) -> Iterator[None]:
        if self._writer == threading.get_ident():
            yield
            return
        with self._cond:
            while self._writer is not None or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer is not None or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = threading.get_ident()
        try:
            yield
        finally:
            with self._cond:
                self._writer = None
                self._cond.notify_all()

"""ObjectStoreLock: searches share it, a write has it alone, a waiting write goes first."""

from __future__ import annotations

import threading

from pkcs11_issuer.hsm.store_lock import ObjectStoreLock

WAIT = 5.0


def _in_thread(body: threading.Thread) -> threading.Thread:
    body.daemon = True
    body.start()
    return body


def test_searches_run_together() -> None:
    lock = ObjectStoreLock()
    both_inside = threading.Barrier(2, timeout=WAIT)

    def search() -> None:
        with lock.searching():
            both_inside.wait()

    other = _in_thread(threading.Thread(target=search))
    search()
    other.join(WAIT)
    assert not other.is_alive()


def test_a_write_waits_for_searches_and_searches_wait_for_a_write() -> None:
    lock = ObjectStoreLock()
    order: list[str] = []
    writer_waiting = threading.Event()

    def write() -> None:
        writer_waiting.set()
        with lock.writing():
            order.append("write")

    def late_search() -> None:
        with lock.searching():
            order.append("late search")

    with lock.searching():
        writer = _in_thread(threading.Thread(target=write))
        assert writer_waiting.wait(WAIT)
        writer.join(0.2)
        assert writer.is_alive(), "a write must not start while a search runs"
        # A search that arrives while a write waits queues behind it, so searches cannot
        # starve key generation.
        searcher = _in_thread(threading.Thread(target=late_search))
        searcher.join(0.2)
        assert searcher.is_alive()
        order.append("first search ends")
    writer.join(WAIT)
    searcher.join(WAIT)
    assert order == ["first search ends", "write", "late search"]


def test_writes_exclude_each_other() -> None:
    lock = ObjectStoreLock()
    inside = 0
    most_inside = 0
    counter = threading.Lock()

    def write() -> None:
        nonlocal inside, most_inside
        for _ in range(200):
            with lock.writing():
                with counter:
                    inside += 1
                    most_inside = max(most_inside, inside)
                with counter:
                    inside -= 1

    writers = [_in_thread(threading.Thread(target=write)) for _ in range(4)]
    for writer in writers:
        writer.join(WAIT)
    assert most_inside == 1


def test_the_writing_thread_may_search_inside_its_write() -> None:
    lock = ObjectStoreLock()
    with lock.writing(), lock.searching():
        pass
    with lock.searching():  # and the lock is free again afterwards
        pass

"""Workers fork from a server that has imported what a trial needs and frozen it out of the garbage collector."""

from __future__ import annotations

import gc
import sys
from multiprocessing.connection import Connection

from search.engine.worker_server import start_worker_server

LOADED = ("tensorflow", "keras", "search.engine.trial", "mlflow.store.tracking.sqlalchemy_store")


def _what_a_worker_finds(send: Connection) -> None:
    send.send(([name for name in LOADED if name in sys.modules], gc.get_freeze_count()))


def test_a_worker_finds_the_libraries_loaded_and_frozen() -> None:
    context = start_worker_server()
    receive, send = context.Pipe(duplex=False)
    worker = context.Process(target=_what_a_worker_finds, args=(send,))
    worker.start()
    send.close()
    loaded, frozen = receive.recv()
    worker.join()
    assert loaded == list(LOADED)
    assert frozen > 100_000  # some 600,000 objects of the libraries: no worker's collection scans them

"""The server that search workers fork from: started once per process, as early as the caller likes.

It imports `search.engine.fork_ready` (TensorFlow, Keras, Optuna, MLflow and its database store) once, never
running TensorFlow, so a new worker costs a fork rather than fresh imports. This module imports nothing
heavy itself, so `atelier run` can start the server first and load its data while the server imports on
the other core.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
from collections.abc import Sequence
from multiprocessing.context import BaseContext

PRELOAD = ["search.engine.fork_ready"]


def start_worker_server(also: Sequence[str] = ()) -> BaseContext:
    """Start the fork server if it is not running yet; the context whose processes fork from it.

    `also`: modules its workers need beyond a search's (the bench's strategies), imported first. The server is
    one per process: the first call's modules are the ones it holds.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([*also, *PRELOAD])
    multiprocessing.forkserver.ensure_running()
    return context

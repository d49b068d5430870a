"""What the fork server imports once (`search.engine.worker_server`), so that no worker forked from it imports it again.

`search.engine.study` and `search.engine.trial` bring TensorFlow, Keras, Optuna and MLflow (the process that runs
a search imports no TensorFlow: only its workers train); MLflow imports its database store only when a
client first opens a database (measured here: 1.2 s of CPU in each worker that did it). The objects all this
made are then frozen out of the garbage collector, so a worker's own collection before its trials scans
only what it made itself (0.4 s a worker before, when each scanned some 600,000 objects).
"""

from __future__ import annotations

import gc

import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

import search.engine.study  # noqa: F401
import search.engine.trial  # noqa: F401

gc.collect()
gc.freeze()

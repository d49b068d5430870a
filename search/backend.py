"""Keras on TensorFlow, imported once, without TensorFlow's start-up chatter on stderr."""

from __future__ import annotations

import os
import re
import sys
import tempfile

VERBOSE = os.environ.get("ATELIER_VERBOSE") == "1"  # `--verbose`: TensorFlow's own lines too
if VERBOSE:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
else:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# oneDNN's kernels: TensorFlow turns them on by default only on some Intel CPUs; its own kernels are built for
# AVX without FMA, while oneDNN picks AVX-512 at run time. Measured here (AMD EPYC, 2 cores), cnn-best's
# reference model: an epoch on 54,000 images took half the time with them. An explicit setting is kept.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

# Lines TensorFlow's C++ runtime prints at import whatever TF_CPP_MIN_LOG_LEVEL says.
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog|I0000 .*(oneDNN custom operations|"
    r"cpu_feature_guard)|To enable the following instructions)"
)


def _import_quietly() -> None:
    """Import TensorFlow with file descriptor 2 captured, then pass on whatever is not known noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        kept = [line for line in capture if not NOISE.match(line)]
    sys.stderr.write("".join(kept))


if "tensorflow" not in sys.modules and not VERBOSE:
    _import_quietly()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

if not VERBOSE:  # TensorFlow's Python warnings (a loaded model's retracing, AutoGraph's notes) are not the user's
    tf.get_logger().setLevel("ERROR")

__all__ = ["keras", "limit_threads", "tf"]


def limit_threads(threads: int) -> None:
    """Give this process's TensorFlow `threads` threads within and between ops; call before any op runs."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)

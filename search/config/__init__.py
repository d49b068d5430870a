"""The files a user writes: search spaces and objectives, read and validated into frozen dataclasses."""

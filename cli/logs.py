"""Logging of every kbrec process: the command's, and each `kbrec serve --workers` worker's
(a spawned process starts without its parent's logging setup)."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
NOISY = ("tf2onnx", "absl")


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=FORMAT)
    if not verbose:
        for noisy in NOISY:
            logging.getLogger(noisy).setLevel(logging.WARNING)

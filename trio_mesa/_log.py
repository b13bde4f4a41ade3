"""The ``trio_mesa`` logger, made once: every record trio-mesa emits goes through it.

A library's logger gets only a NullHandler (Python's logging HOWTO): the application
decides where records go. Without it, logging's last-resort handler would print a
traceback to stderr for every failed agent of every step.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("trio_mesa")
logger.addHandler(logging.NullHandler())

__all__ = ["logger"]

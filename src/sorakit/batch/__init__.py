"""Crash-proof batches: many prompts in, one video each out, resumable after any crash.

``load_rows`` reads a batch file, ``Journal`` records every row's progress in local SQLite, and
``run_batch`` drives a ``SoraClient`` through them. The ``sorakit batch`` command is a thin layer
over these three.
"""

from .journal import Entry, Journal, JournalError
from .rows import Row, RowError, load_rows, parse_rows
from .runner import BatchResult, Event, run_batch

__all__ = ["BatchResult", "Entry", "Event", "Journal", "JournalError", "Row", "RowError", "load_rows",
           "parse_rows", "run_batch"]

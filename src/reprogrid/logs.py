"""Logging of the pipeline's jobs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import TracebackType


def _log_uncaught(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    logging.getLogger("reprogrid").critical(
        "the job failed with an uncaught exception", exc_info=(kind, error, trace)
    )


def setup_logging(log_path: str | Path | None) -> None:
    """Log to the job's log file (appending, so a resumed job keeps every attempt) and stderr.

    From here on, an exception nobody catches is logged with its traceback to both, so the
    rule log of a failed job (`snakemake --show-failed-logs`) says where it failed.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="a", encoding="utf-8"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=handlers,
        force=True,
    )
    sys.excepthook = _log_uncaught

"""Logging of the pipeline's jobs, and the train.log lines `reprogrid status` reads back."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from types import TracebackType

from reprogrid.record import atomic

# The lines of a train.log that `reprogrid status` parses, each format beside its pattern.
# Every line starts with `TIME_FORMAT`'s timestamp, a comma, milliseconds and the level.
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ ([A-Z]+) (.*)")
# The first line of each attempt (a resumed job appends to the same log), starting with the
# id of the job that writes it, which the run's provenance names too.
ATTEMPT_LINE = "job %s: run %s on %s with %d thread(s)"
ATTEMPT = re.compile(r"(?:job (\S+): )?run \S+ on \S+ with \d+ thread")
# One line per epoch: epoch k of N, its metrics, its wall seconds and the run's ETA.
EPOCH_LINE = "epoch %d/%d: train_loss %.4f %s (%.1f s, run ETA %s)"
EPOCH = re.compile(r"epoch (\d+)/(\d+): train_loss .* \((\d+\.\d) s, run ETA")
# Progress within an epoch longer than `training.PROGRESS_SECONDS`.
PROGRESS_LINE = "epoch %d/%d: batch %d/%d (%.0f s, epoch ETA %s)"
PROGRESS = re.compile(r"epoch (\d+)/(\d+): batch (\d+)/(\d+) \((\d+) s")
STOPPED_LINE = "stopped by signal %d in epoch %d after batch %d; checkpoint saved"
STOPPED = re.compile(r"stopped by signal \d+ in epoch")
TRACEBACK = "Traceback (most recent call last):"


def last_job(path: str | Path) -> str | None:
    """The job id of a log's last attempt; None without a log or an attempt naming a job."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    jobs = [found[1] for found in ATTEMPT.finditer(text)]
    return jobs[-1] if jobs else None


def duration(seconds: float) -> str:
    """`seconds` as a person reads a duration: 45 s, 12 min 03 s, 3 h 05 min."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _log_uncaught(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    if isinstance(error, atomic.DiskFull):
        # No mistake in the code: the one thing to say is which disk to free.
        logging.getLogger("reprogrid").error("reprogrid: %s", error)
        return
    logging.getLogger("reprogrid").critical(
        "the job failed with an uncaught exception", exc_info=(kind, error, trace)
    )


class _JobLog(logging.FileHandler):
    """A job's log file. On a full disk its lines cannot be written there, and stderr, which
    gets every line too, shows them; logging's report of each failed write (a traceback per
    line) would only bury the one line that says which disk to free."""

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError) and error.errno in atomic.FULL:
            return
        super().handleError(record)


def setup_logging(log_path: str | Path | None) -> None:
    """Log to the job's log file (appending, so a resumed job keeps every attempt) and stderr.

    From here on, an exception nobody catches is logged with its traceback to both, so the
    rule log of a failed job (`snakemake --show-failed-logs`) says where it failed; a full
    disk (`atomic.DiskFull`) is one `reprogrid:` line naming the file, with no traceback.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(_JobLog(log_path, mode="a", encoding="utf-8"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=handlers,
        force=True,
    )
    sys.excepthook = _log_uncaught

"""Where a run's metrics go: ``metrics.jsonl`` always, ``metrics.csv`` and TensorBoard on request.

``train.loggers`` lists them (``[jsonl, csv, tensorboard]``; jsonl is written whatever the list says,
since every stage and table reads it). All three hold the same records, one per evaluated epoch, and
follow a resume: records after the resumed checkpoint are dropped from the JSONL and CSV files, and
TensorBoard's writer purges its events from the first epoch written again (``purge_step``), so a resumed
run never shows an epoch twice. Only the writing process (rank 0) writes.

TensorBoard is an optional extra (``pip install 'mmtool[tensorboard]'``): asking for it without the
package is a one-line error before training starts. Its events go to ``<run>/tensorboard/`` (the run's
loggers' folder, :attr:`mmtool.runs.Layout.logs`):
``tensorboard --logdir runs/`` shows every run. A write the file system refuses, in any of them, is one
line naming the file or folder (:func:`~mmtool.files.writing`).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from mmtool.errors import UserError
from mmtool.faults import fault_point
from mmtool.files import atomic_write_text, is_writer, writing
from mmtool.runs import Layout

LOGGERS = ("jsonl", "csv", "tensorboard")


class MetricLoggers:
    """The loggers of one training run (see the module docstring)."""

    def __init__(self, out: Layout, names: tuple[str, ...] | list[str] = ("jsonl",)) -> None:
        unknown = [n for n in names if n not in LOGGERS]
        if unknown:
            raise UserError(f"train.loggers: {unknown} unknown; choose from {', '.join(LOGGERS)}")
        self.out_dir = out.logs  # the run's (or part's) loggers' folder: metrics.csv and tensorboard/ go here
        self.jsonl = out.metrics()
        self.csv = "csv" in names
        self.tensorboard = None
        self._tb_wanted = "tensorboard" in names
        if self._tb_wanted:
            _summary_writer_class()  # fail now, not after the first epoch

    def write(self, record: dict[str, Any]) -> None:
        if not is_writer():
            return
        self.jsonl.write(record)
        if self.csv:
            self._write_csv()
        if self._tb_wanted:
            self._write_tensorboard(record)

    def truncate_after(self, epoch: int) -> None:
        """Forget what was logged after ``epoch`` (a resumed run redoes it)."""
        self.jsonl.truncate_after(epoch)
        if self.csv and is_writer():
            self._write_csv()

    def close(self) -> None:
        if self.tensorboard is not None:
            writer, self.tensorboard = self.tensorboard, None
            with writing(self.out_dir / "tensorboard"):
                writer.close()

    def _write_csv(self) -> None:
        """``metrics.csv`` rewritten from ``metrics.jsonl``: a column per key ever logged, in first-seen order
        (keys logged only some epochs, such as validation numbers, leave empty cells elsewhere)."""
        records = self.jsonl.read()
        columns = list(dict.fromkeys(k for r in records for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        with writing(self.out_dir / "metrics.csv"):
            fault_point("logger_write")  # tests: MMTOOL_FAULT=logger_write:1:enospc (csv or tensorboard)
            atomic_write_text(self.out_dir / "metrics.csv", buf.getvalue())

    def _write_tensorboard(self, record: dict[str, Any]) -> None:
        epoch = int(record["epoch"])
        folder = self.out_dir / "tensorboard"
        with writing(folder):
            fault_point("logger_write")
            if self.tensorboard is None:  # events from this epoch on, left by an interrupted attempt, are purged
                _after_earlier_event_files(folder)
                self.tensorboard = _summary_writer_class()(log_dir=str(folder), purge_step=epoch)
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tensorboard.add_scalar(_tag(key), value, epoch)
            self.tensorboard.flush()


def _after_earlier_event_files(folder: Path) -> None:
    """Wait (at most a second) until a new event file's name sorts after the earlier ones'. TensorBoard
    reads a folder's files in name order, and the name starts with the creation time in whole seconds:
    a resume within the second of the killed attempt would otherwise be read first, and its purge of the
    redone epochs would apply to the wrong events."""
    import time

    stamps = [int(p.name.split(".")[3]) for p in folder.glob("events.out.tfevents.*") if p.name.split(".")[3].isdigit()]
    while stamps and int(time.time()) <= max(stamps):
        time.sleep(0.05)


def _tag(key: str) -> str:
    """TensorBoard tags grouped into sections: ``train/task_loss``, ``val/accuracy``, ``lr``."""
    for prefix in ("train_", "val_"):
        if key.startswith(prefix):
            return f"{prefix[:-1]}/{key[len(prefix):]}"
    return key


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(
            "train.loggers: tensorboard needs the tensorboard package: pip install 'mmtool[tensorboard]' "
            "(or drop it from train.loggers)"
        ) from None
    return SummaryWriter

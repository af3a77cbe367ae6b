"""Structural rules of the code base, checked by reading the source."""

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mmtool"
READERS = {"data", "engine/inference.py", "engine/loop.py"}  # where a split's batches may be iterated


def _allowed(path: Path) -> bool:
    rel = path.relative_to(PACKAGE).as_posix()
    return any(rel == r or rel.startswith(r + "/") for r in READERS)


def test_splits_are_iterated_only_by_the_loop_and_the_inference_pass():
    """Every evaluation goes through mmtool.engine.inference.run_inference: no stage, method or analysis
    keeps a loop of its own over a split (which would hold the split, skip the workers, or forget autocast)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\.batches\(", line) or (re.search(r"\.loader\(", line) and not _allowed(path)):
                offenders.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    assert offenders == []


def test_whole_split_tensors_are_read_only_by_the_data_layer():
    """Outside mmtool/data a split is a source: targets() and loader(), never its tensors."""
    pattern = re.compile(r"splits\[[^]]+\]\.(inputs|target)\b|\bsplit\.(inputs|target)\b")
    offenders = [
        f"{p.relative_to(PACKAGE)}:{n}"
        for p in sorted(PACKAGE.rglob("*.py"))
        if not p.relative_to(PACKAGE).as_posix().startswith("data/")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []

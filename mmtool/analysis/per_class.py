"""Per-class comparison of uni-modal models, their averaged predictions and a fusion model
(paper 000, Tables 2, 16 and 17)."""

from __future__ import annotations

import torch


def per_class_accuracy(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> list[float]:
    """Accuracy (%) of each class; NaN for a class with no test sample."""
    hit = (logits.argmax(1) == target).float()
    out = []
    for c in range(num_classes):
        mask = target == c
        out.append(float(hit[mask].mean() * 100) if mask.any() else float("nan"))
    return out


def compare_classes(rows: dict[str, list[float]], unimodal: list[str], fusion: str, average: str) -> dict:
    """Classes where ``fusion`` beats the sum of the uni-modal accuracies (cross-modal interaction helps,
    Table 2), and classes where ``average`` beats ``fusion`` (interaction hurts, Tables 16/17)."""
    classes = range(len(rows[fusion]))
    beyond_sum = [c for c in classes if rows[fusion][c] > sum(rows[m][c] for m in unimodal)]
    average_wins = [c for c in classes if rows[average][c] > rows[fusion][c]]
    return {"fusion_beats_sum_of_unimodal": beyond_sum, "average_beats_fusion": average_wins}


def markdown(rows: dict[str, list[float]], classes: list[int] | None = None) -> str:
    """One column per class, one row per model, like Table 2."""
    n = len(next(iter(rows.values())))
    chosen = classes if classes is not None else list(range(n))
    head = "| model | " + " | ".join(f"class {c}" for c in chosen) + " | mean |"
    lines = [head, "|---" * (len(chosen) + 2) + "|"]
    for name, acc in rows.items():
        cells = [acc[c] for c in chosen]
        mean = sum(cells) / len(cells) if cells else float("nan")
        lines.append(f"| {name} | " + " | ".join(f"{a:.1f}" for a in cells) + f" | {mean:.1f} |")
    return "\n".join(lines) + "\n"

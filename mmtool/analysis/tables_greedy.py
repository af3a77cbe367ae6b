"""Paper 002's (Wu et al. 2022, "Characterizing and overcoming the greedy nature of learning in multi-modal deep neural
networks") Table 1 as the target ``greedy-table1``.

Test accuracy (mean ± std over seeds; the paper trains each model three times, Sec. 6.4) of the best uni-modal network
and of the MMTM model trained four ways, on Colored-and-gray-MNIST, ModelNet40 (front and rear views) and NVGesture
(RGB and depth) from scratch and from Kinetics-pretrained I3D weights:

* uni-modal (best): ``pretrain-unimodal`` with Squeeze-and-Excitation blocks where the MMTM model has MMTMs
  (``recipes/<set>/pretrain_se.yaml``), the better modality by its mean;
* multi-modal (vanilla): ``recipes/<set>/mmtm.yaml`` (the branches' losses summed, Eq. 4);
* + RUBi: ``rubi.yaml``; + random / + guided: ``balanced_random.yaml`` / ``balanced.yaml`` (Alg. 1; alpha 0.1 on
  Colored-and-gray-MNIST and NVGesture, 0.01 on ModelNet40; Q 5).

NVGesture-pretrained: the same runs with both I3D branches initialised from the Kinetics checkpoint of the PyTorch
I3D port (``weights/i3d_rgb_imagenet.pt`` at the repository root, its ``rgb_imagenet.pt``; depth through the averaged
first convolution, :mod:`mmtool.models.i3d`), runs ``*-k400``. SMOKE runs the scratch runs of every dataset (no
Kinetics weights in the fixtures).
"""

from __future__ import annotations

from mmtool.analysis.paper_defs import Best, PaperTable, Run, Source, TablePlan, test_acc

COLUMNS = ("Colored-and-gray-MNIST", "ModelNet40", "NVGesture-scratch", "NVGesture-pretrained")
# Table 1 of paper 002, as printed (mean ± std of three runs)
PAPER_ROWS = {
    "uni-modal (best)": ("99.14 ± 0.11", "89.34 ± 0.39", "77.59 ± 0.55", "78.98 ± 2.02"),
    "multi-modal (vanilla)": ("45.26 ± 0.46", "90.09 ± 0.58", "79.81 ± 1.14", "83.20 ± 0.21"),
    "+ RUBi (Cadene et al., 2019)": ("44.79 ± 0.62", "90.45 ± 0.58", "79.95 ± 0.12", "81.60 ± 1.28"),
    "+ random (proposed)": ("74.07 ± 2.75", "91.36 ± 0.10", "79.88 ± 0.90", "82.64 ± 0.84"),
    "+ guided (proposed)": ("91.01 ± 1.20", "91.37 ± 0.28", "80.22 ± 0.73", "83.82 ± 1.45"),
}
# row -> the train recipe (and run name) of each multi-modal row
TRAINED = {"multi-modal (vanilla)": "mmtm", "+ RUBi (Cadene et al., 2019)": "rubi",
           "+ random (proposed)": "balanced_random", "+ guided (proposed)": "balanced"}  # fmt: skip
MODALITIES = {"colored-mnist": ("color", "gray"), "modelnet40": ("front", "rear"), "nvgesture": ("rgb", "depth")}
# column -> (dataset, suffix of its runs)
WHERE = {"Colored-and-gray-MNIST": ("colored-mnist", ""), "ModelNet40": ("modelnet40", ""),
         "NVGesture-scratch": ("nvgesture", ""), "NVGesture-pretrained": ("nvgesture", "-k400")}  # fmt: skip
KINETICS = "../../weights/i3d_rgb_imagenet.pt"  # relative to recipes/nvgesture/: <repository>/weights/
PRETRAINED = (f"model.encoders.rgb.pretrained={KINETICS}", f"model.encoders.depth.pretrained={KINETICS}")

SCRATCH = (Run("unimodal", "pretrain-unimodal", "pretrain_se"), *(Run(r, "train", r) for r in TRAINED.values()))
KINETICS_RUNS = tuple(Run(f"{r.name}-k400", r.command, r.recipe, overrides=PRETRAINED) for r in SCRATCH)
TABLES = {
    "greedy-table1": TablePlan(
        ("colored-mnist", "modelnet40", "nvgesture"),
        (*SCRATCH, *KINETICS_RUNS),
        None,
        all_seeds=True,
        smoke=tuple(r.name for r in SCRATCH),
        skip=tuple((d, r.name) for d in ("colored-mnist", "modelnet40") for r in KINETICS_RUNS),
    )
}

PAPER = {
    "greedy-table1": PaperTable(
        "Paper 002, Table 1. Test accuracy of best uni-modal DNNs and multi-modal DNNs trained using different "
        "strategies.",
        "Method",
        COLUMNS,
        PAPER_ROWS,
        digits=2,
        notes=(
            "Ours: uni-modal (best) is the better of the two SE uni-modal networks by its mean "
            "(recipes/<set>/pretrain_se.yaml); the multi-modal rows train the MMTM model (recipes/<set>/mmtm.yaml, "
            "rubi.yaml, balanced_random.yaml, balanced.yaml); NVGesture-pretrained initialises both I3D branches "
            "from the Kinetics checkpoint in weights/i3d_rgb_imagenet.pt (depth: the averaged first convolution).",
            "Paper: \"The uni-modal branch taking gray-scale image in the multi-modal DNNs (guided) achieves an "
            "accuracy of 99.16±0.14\" on Colored-and-gray-MNIST; NVGesture numbers are not directly comparable to "
            "other works' (20% of the training gestures are the validation set).",
        ),
    )
}


def _cell(row: str, column: str) -> Source | Best:
    dataset, suffix = WHERE[column]
    if row == "uni-modal (best)":
        return Best(tuple(Source(dataset, f"unimodal{suffix}", ("modalities", m, "test_accuracy"))
                          for m in MODALITIES[dataset]))  # fmt: skip
    return test_acc(dataset, f"{TRAINED[row]}{suffix}")


OURS = {"greedy-table1": {row: tuple(_cell(row, c) for c in COLUMNS) for row in PAPER_ROWS}}

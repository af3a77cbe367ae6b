"""Paper 000's Tables 12-15 (App. A.3-A.6: optimizers, UMT's distillation weight, dropout, fine-tuning) and
paper 001's Table 2 (nine methods on VGG-Sound, mean ± std), as `mmtool reproduce` targets.

Each table is a :class:`~mmtool.analysis.paper_defs.TablePlan` (``TABLES``), the paper's numbers (``PAPER``,
transcribed from ``/work/shared/papers/000_*.txt`` and ``001_*.txt`` with their row and column names) and
our cell sources (``OURS``); :mod:`mmtool.analysis.paper_plans` and :mod:`mmtool.analysis.paper_tables`
take them from ``EXTRA``. The sweeps are ``Run.overrides`` on an existing recipe. Where a row is the same
run as in another table (same name, recipe, inputs and overrides: ``naive``, ``umt``, ``gblending``,
``self_distill_feature``), it keeps that table's run name, so the run is made once and read by both.

This module imports only :mod:`mmtool.analysis.paper_defs`: ``paper_plans`` and ``paper_tables`` import it
while they load, so it declares its own (equal) uni-modal run instead of importing theirs.

Choices where the papers are silent (each also in a note under its table):

* Table 12 names no setting of any optimizer: every one keeps VGG-Sound's recipe (lr 1e-3, StepLR(10)) and
  PyTorch's defaults (SGD and RMSprop without momentum); AdamW decays weights by 0.01, PyTorch's default
  (at 0 it is Adam). The Adam row is the naive run (the paper's Adam row repeats Table 1's Linear-Fusion).
* Table 13's weight 0 is UMT's recipe without distillation (the paper's 0 equals its naive baseline).
* Table 15's encoder lr is ``optim.lr`` (1e-3, A.6's classifier lr) times ``method.encoder_lr_scale``.
* Paper 001's "Self Distillation" is feature-level (its Sec. 4.1: "Unless otherwise stated, all
  distillations were performed on feature-level"), Table 8's ``self_distill_feature`` run.
"""

from __future__ import annotations

from mmtool.analysis.paper_defs import PaperTable, Run, Source, TablePlan, probe, test_acc

VGG = ("vggsound",)
TEACHERS = (("teachers", "unimodal"),)
UNIMODAL = Run("unimodal", "pretrain-unimodal", "pretrain")  # equal to paper_plans.UNIMODAL: one run


def _train(name: str, recipe: str | None = None, inputs: tuple = (), overrides: tuple[str, ...] = ()) -> Run:
    return Run(name, "train", recipe or name, inputs, overrides)


def _probe(run: str) -> Run:
    return Run(f"probe-{run}", "probe", "probe", (("run", run),))


# --------------------------------------------------------------------------------------------- Table 12
# The paper's row name -> optim.name; the Adam row is VGG-Sound's own recipe (Table 11), the naive run.
OPTIMIZERS = {"SGD": "sgd", "RMSprop": "rmsprop", "Adagrad": "adagrad", "Adadelta": "adadelta", "Adamw": "adamw",
              "Adam": "adam"}  # fmt: skip
ADAMW_DECAY = 0.01  # paper silent; PyTorch's AdamW default (optim.weight_decay must be > 0 for adamw)


def optimizer_run(opt: str) -> str:
    return "naive" if opt == "adam" else f"naive-{opt}"


def _optimizer_runs() -> tuple[Run, ...]:
    runs = []
    for opt in OPTIMIZERS.values():
        extra = (f"optim.weight_decay={ADAMW_DECAY}",) if opt == "adamw" else ()
        overrides = () if opt == "adam" else (f"optim.name={opt}", *extra)
        runs.append(_train(optimizer_run(opt), "naive", (), overrides))
    return tuple(runs)


# --------------------------------------------------------------------------------------------- Table 13
WEIGHTS = (0, 1, 10, 20, 50, 100)  # the paper's columns; 50 is the recipe's weight (App. A.4), the umt run


def weight_run(weight: int) -> str:
    return "umt" if weight == 50 else f"umt-w{weight}"


def _weight_runs() -> tuple[Run, ...]:
    return tuple(
        _train(weight_run(w), "umt", TEACHERS, () if w == 50 else (f"method.distill_weight={w}",)) for w in WEIGHTS
    )


# --------------------------------------------------------------------------------------------- Table 15
# The paper's encoder lr -> method.encoder_lr_scale on the recipe's optim.lr 1e-3 (A.6: classifier lr 1e-3)
ENCODER_LRS = {"1e-3": 1.0, "1e-4": 0.1, "1e-5": 0.01, "1e-6": 0.001, "0": 0.0}


def finetune_run(lr: str) -> str:
    return "finetune" if lr == "1e-3" else f"finetune-enc{lr}"


def _finetune_runs() -> tuple[Run, ...]:
    return tuple(
        _train(finetune_run(lr), "finetune", TEACHERS, () if s == 1.0 else (f"method.encoder_lr_scale={s}",))
        for lr, s in ENCODER_LRS.items()
    )


# --------------------------------------------------------------------------------------------- the plans
NAIVE = _train("naive")
UMT = _train("umt", inputs=TEACHERS)
DROPOUTS = (_train("dropout"), _train("modality_dropout"))
# paper 001, Table 2's rows beyond Table 14's: single-modality UMT, fine-tuning, self-distillation, G-Blending
WS_MORE = (
    _train("finetune", inputs=TEACHERS),
    _train("umt_video", inputs=TEACHERS),
    _train("umt_audio", inputs=TEACHERS),
    _train("self_distill_feature", inputs=(("method.teacher_run", "naive"),)),
    _train("gblending"),
)
TABLES: dict[str, TablePlan] = {
    "table12": TablePlan(
        VGG,
        (UNIMODAL, *_optimizer_runs(), _probe("unimodal"), *(_probe(optimizer_run(o)) for o in OPTIMIZERS.values())),
        "vggsound",
    ),
    "table13": TablePlan(("vggsound", "kinetics400"), (UNIMODAL, *_weight_runs()), "vggsound"),
    # the paper's numbers are paper 001's seed means (Table 2): every seed, as ws-table2, whose runs these are
    "table14": TablePlan(VGG, (UNIMODAL, NAIVE, *DROPOUTS, UMT), "vggsound", all_seeds=True),
    "table15": TablePlan(
        VGG, (UNIMODAL, *_finetune_runs(), *(_probe(finetune_run(lr)) for lr in ENCODER_LRS)), "vggsound"
    ),
    "ws-table2": TablePlan(VGG, (UNIMODAL, NAIVE, *DROPOUTS, *WS_MORE, UMT), "vggsound", all_seeds=True),
}

# --------------------------------------------------------------------------------------------- the papers
PAPER: dict[str, PaperTable] = {
    "table12": PaperTable(
        "Table 12. Top-1 test accuracy (in %) of linear classifiers trained on frozen encoders from multi-modal "
        "late-fusion training under different optimizers and uni-modal training on VGG-Sound.",
        "Optimizer",
        ("Multi-modal Performance", "Audio Encoder", "RGB Encoder"),
        {
            "SGD": (47.13, 40.02, 15.53),
            "RMSprop": (47.90, 42.77, 13.64),
            "Adagrad": (42.19, 35.68, 19.65),
            "Adadelta": (23.18, 17.70, 17.37),
            "Adamw": (49.39, 42.41, 15.11),
            "Adam": (49.47, 43.44, 15.56),
            "Uni-Training": ("/", 45.15, 23.17),
        },
        digits=2,
        notes=(
            "Multi-modal Performance: test accuracy of the late-fusion model (linear head); the encoder columns: a "
            "linear classifier on the frozen encoder (probe); RGB Encoder is our video encoder.",
            "The paper names no optimizer setting (App. A.3). Ours: recipes/vggsound/naive.yaml with optim.name "
            "set, every optimizer at the recipe's lr 1e-3 and StepLR(10) (Table 11's Adam values), PyTorch's "
            f"defaults otherwise (SGD and RMSprop without momentum); Adamw with weight_decay {ADAMW_DECAY} "
            "(PyTorch's default; at 0 it is Adam). Adam is the naive run of Tables 1, 5, 7 and 8 (the paper's "
            "Adam row repeats Table 1's Linear-Fusion), Uni-Training the uni-modal run's probe (Table 1's).",
        ),
    ),
    "table13": PaperTable(
        "Table 13. Different distillation weights of UMT on VGG-Sound and Kinetics-400",
        "Dataset",
        tuple(str(w) for w in WEIGHTS),
        {
            "VGG-Sound": (49.46, 49.51, 51.31, 51.51, 53.46, 53.11),
            "Kinetics-400": (74.25, 74.99, 75.57, 76.11, 76.77, 76.55),
        },
        digits=2,
        notes=(
            "Columns: UMT's distillation weight (both modalities). Ours: recipes/<set>/umt.yaml with "
            "method.distill_weight=W; 50 is the umt run of Tables 5, 7 and 8.",
            "The paper's 0 and 50 on VGG-Sound (49.46, 53.46) are paper 001's seed means of naive fusion and UMT "
            "(its Table 2); ours at 0 is UMT's recipe without distillation (on VGG-Sound its lr decays every 5 "
            "epochs, the naive recipe's every 10).",
        ),
    ),
    "table14": PaperTable(
        "Table 14. Dropout in multi-modal training on VGG-Sound.",
        "Method",
        ("Performance",),
        {"Baseline": (49.46,), "Dropout": (49.83,), "Modal-Drop": (51.37,), "UMT": (53.46,)},
        digits=2,
        notes=(
            "Dropout: rate 0.5 on the features before the head, training only (paper 000 names no rate; paper 001, "
            "Table 2: 0.5). Modal-Drop: per training sample, one modality's features zeroed with probability 1/3 "
            "(App. A.5; mmtool/methods/modality_dropout.py says how it reads the sentence).",
            "The paper's numbers are the means of paper 001, Table 2 (mean ± std over seeds); ours are over every "
            "seed given, the runs of ws-table2.",
        ),
    ),
    "table15": PaperTable(
        "Table 15. The top-1 test accuracy of finetuning the uni-modal pre-trained encoders and linear evaluation "
        "on finetuned encoders on VGG-Sound.",
        "Encoder LR",
        ("Top-1 Acc", "Encoder Eval Audio", "Encoder Eval RGB"),
        {
            "1e-3": (50.98, 43.98, 21.86),
            "1e-4": (49.37, 44.71, 21.97),
            "1e-5": (50.45, 45.28, 23.13),
            "1e-6": (50.86, 45.29, 23.27),
            "0": (50.95, 45.15, 23.17),
        },
        digits=2,
        notes=(
            "Ours: encoders initialised from the uni-modal run, a new linear head at lr 1e-3 (App. A.6), encoders "
            "at 1e-3 x method.encoder_lr_scale (recipes/vggsound/finetune.yaml); Encoder Eval: a linear "
            "classifier on the fine-tuned encoder (probe); RGB is our video encoder.",
            "At encoder lr 0 the weights stay the pre-trained ones, but BatchNorm's running statistics follow the "
            "multi-modal training batches; the paper's 0 row repeats the uni-modal probes of Table 1.",
        ),
    ),
    "ws-table2": PaperTable(
        "Paper 001, Table 2: Top-1 accuracy (in %) under UMT and baseline methods on VGGSound dataset.",
        "Method",
        ("Top-1 Accuracy",),
        {
            "Naive Fusion": ("49.46 ± 0.28",),
            "Pre-train + Fine-tune": ("50.81 ± 0.33",),
            "Dropout": ("49.83 ± 0.12",),
            "Modality Dropout": ("51.37 ± 0.76",),
            "Video-only Distillation": ("49.55 ± 0.06",),
            "Audio-only Distillation": ("48.84 ± 0.27",),
            "Self Distillation": ("49.86 ± 0.66",),
            "Gradient-Blending": ("50.39 ± 0.21",),
            "Uni-Modal Teacher": ("53.46 ± 0.49",),
        },
        digits=2,
        notes=(
            "The paper prints two method columns side by side (read here row by row), marks the baseline "
            "'(Baseline)' and cites Dropout [43] and Gradient-Blending [44]; mean ± std over seeds.",
            "Ours: Pre-train + Fine-tune is Table 15's encoder lr 1e-3 run; Video-/Audio-only Distillation is UMT "
            "with that modality's teacher only (method.modalities; lr decay every 5 epochs, as UMT); Self "
            "Distillation is feature-level (paper 001, Sec. 4.1: all its distillations are), Table 8's "
            "self_distill_feature run; Naive Fusion, Gradient-Blending and UMT are Table 5's runs.",
        ),
    ),
}


# --------------------------------------------------------------------------------------------- our cells
def _fused_and_probes(run: str) -> tuple[Source, ...]:
    """Test accuracy of ``run``, then the probes of its audio and video (the paper's RGB) encoders."""
    return (test_acc("vggsound", run), probe("vggsound", run, "audio"), probe("vggsound", run, "video"))


def _vgg(*runs: str) -> tuple[tuple[Source], ...]:
    return tuple((test_acc("vggsound", r),) for r in runs)


# paper 001, Table 2's rows in the paper's order
WS_RUNS = ("naive", "finetune", "dropout", "modality_dropout", "umt_video", "umt_audio", "self_distill_feature",
           "gblending", "umt")  # fmt: skip
OURS: dict[str, dict[str, tuple[Source | None, ...]]] = {
    "table12": {
        **{row: _fused_and_probes(optimizer_run(opt)) for row, opt in OPTIMIZERS.items()},
        "Uni-Training": (None, probe("vggsound", "unimodal", "audio"), probe("vggsound", "unimodal", "video")),
    },
    "table13": {
        row: tuple(test_acc(ds, weight_run(w)) for w in WEIGHTS)
        for row, ds in (("VGG-Sound", "vggsound"), ("Kinetics-400", "kinetics400"))
    },
    "table14": dict(zip(PAPER["table14"].rows, _vgg("naive", "dropout", "modality_dropout", "umt"), strict=True)),
    "table15": {lr: _fused_and_probes(finetune_run(lr)) for lr in ENCODER_LRS},
    "ws-table2": dict(zip(PAPER["ws-table2"].rows, _vgg(*WS_RUNS), strict=True)),
}

"""Every method's recipe options (the ``method:`` section), its one-line summary and its reference.

This module imports nothing heavy (no torch, no mmtool.data, no mmtool.models): recipe validation
(`mmtool validate`, :func:`mmtool.config.build_method_config`) and `mmtool train --list` read it without
loading torch. Each method class takes its ``Params``, ``summary`` and ``reference`` from here, and
registration checks that they agree (:data:`mmtool.methods.METHODS`).

Params are frozen dataclasses of plain values; comments give each default's source.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmtool.checks import above, at_least, between, checked, one_of


@dataclass(frozen=True)
class NaiveParams:
    pass


@dataclass(frozen=True)
class UniModalParams:
    pass


@dataclass(frozen=True)
class UniModalEnsembleParams:
    # build the ensemble from the uni-modal models of `teachers` as they are, and train nothing
    # (what `train --from-decision` does with a UME verdict)
    from_teachers: bool = False


@dataclass(frozen=True)
class UniModalTeacherParams:
    task_weight: float = 1.0  # App. A.2
    distill_weight: float = 50.0  # App. A.2
    modalities: tuple[str, ...] = ()  # distilled modalities; empty = every modality with a teacher


@dataclass(frozen=True)
class AuxiliaryCEParams:
    aux_weight: float = 1.0  # Sec. 4.3: "all losses equal weights"


@dataclass(frozen=True)
class FeatureDropoutParams:
    p: float = 0.5  # paper 001, Table 2: "0.5 dropout ratio"


@dataclass(frozen=True)
class ModalityDropoutParams:
    p: float = 1.0 / 3.0  # App. A.5: "with probability 1/3"


@dataclass(frozen=True)
class SelfDistillationParams:
    level: str = "label"  # label | feature (Table 8's two rows)
    teacher_run: str | None = None  # a finished `mmtool train` run directory (naive fusion)
    weight: float | None = None  # None: 1.0 for label, 50.0 for feature (see mmtool.methods.self_distill)
    temperature: float = 4.0  # label level only


@dataclass(frozen=True)
class FineTuneParams:
    encoder_lr_scale: float = 1.0  # encoder lr = optim.lr * scale; Table 15 sweeps 1 ... 1e-3 and 0


@dataclass(frozen=True)
class OGMGEParams:
    alpha: float = 0.5  # the original tunes it per dataset (0.1 to 0.8 in its scripts)
    start_epoch: int = 1  # first epoch with modulation (1-based)
    end_epoch: int = 50  # last epoch with modulation
    gaussian_enhancement: bool = True  # GE: add N(0, std(grad)^2) to modulated gradients
    # which encoder gradients are modulated: all (mmtool) or conv, only 4-D tensors (2-D convolution kernels),
    # as the released code; with MLP encoders (or 3-D convolutions) conv modulates nothing, as the original
    modulate: str = checked("all", one_of("all", "conv"))


@dataclass(frozen=True)
class GradientBlendingParams:
    super_epoch: int = 5  # epochs between weight re-estimations
    eps: float = 1.0e-8  # floor of O^2
    # every head's weight is at least this (mmtool.methods.gblending): a head on a plateau keeps learning;
    # 0 gives back the permanent zero of a head whose held-out loss has not improved yet
    min_weight: float = checked(0.05, between(0, 1, "[)"))


@dataclass(frozen=True)
class AlternatingUnimodalAdaptationParams:
    # paper: Eq. 1-8 as the paper states them; code: what the authors' released main.py/utils.py run
    # (docs/fidelity.md lists every difference)
    variant: str = checked("paper", one_of("paper", "code"))
    alpha: float | None = None  # Eq. 5 regulariser, paper only (None: 1.0; the paper leaves it open); code: 0.1^(1+b/n)
    project: bool | None = None  # head-gradient modification; None: the variant's (paper on, code off as released)
    fusion_weights: tuple[float, ...] = ()  # code only: fixed test-time weights per modality (theirs: 0.55, 0.45)
    # test-time dynamic fusion (paper 003 Table 3 "DF"): on, the variant's entropy weights; off, the modalities'
    # predictions weighted equally (or by fusion_weights, variant code)
    dynamic_fusion: bool = True


@dataclass(frozen=True)
class BalancedMultiModalParams:
    # paper: Eq. 2 and Def. 5.1 as written; code: the released code's MMTM (sigmoid(w) scale, (C0 + C1)/2
    # bottleneck), mu from the weights before the step, log10 (docs/fidelity.md lists every difference)
    variant: str = checked("paper", one_of("paper", "code"))
    mode: str = "guided"  # guided | random | vanilla
    # imbalance tolerance in the authors' units (their d_speed uses log10): paper 002 uses 0.1 on
    # Colored-and-gray MNIST, 0.01 on ModelNet40; variant paper compares its ln-based d_speed with alpha * ln 10
    alpha: float = 0.1
    window: int = 5  # Q, re-balancing steps per window (paper 002: 5 on every dataset)
    warmup_epochs: int = 1  # regular steps only (paper 002: the first epoch)
    # variant code only, off by default: reproduce a bug of the released code, whose re-balancing steps for
    # the second modality use the running mean of the *first* modality's excitation (needs equal widths)
    bug_compatible: bool = False


@dataclass(frozen=True)
class QualityAwareFusionParams:
    # lambda of the ranking regulariser: 0.1 in the QMF code (RGBD-scene-recognition/train_QMF_*.py, --lamb) and
    # in MLA's main.py on its ResNet-18 (audio-video) path; MLA's M3AE (image-text, IEMOCAP) path uses 1
    rank_weight: float = checked(0.1, at_least(0))
    # weight of CE on the fused logits: 1 in the QMF code and MLA's audio-video path; its M3AE path has no such term
    fused_weight: float = checked(1.0, at_least(0))
    temperature: float = checked(10.0, above(0))  # T of w_m = -energy / T: the QMF code's "/ 10" (and MLA's main.py)


@dataclass(frozen=True)
class RUBiParams:
    # the modalities with a RUBi branch whose sigmoid masks the fused logits (empty: every modality). Paper 002
    # runs RUBi on two-modality models without naming the branch's modality; ours: a branch per modality
    modalities: tuple[str, ...] = ()
    branch_weight: float = checked(1.0, at_least(0))  # Cadene et al. Eq. 4: L_QM + L_QO, equal weights
    # c'_q, the extra linear layer between the mask's logits and the branch's loss (Cadene et al. Sec. 3.2;
    # their code's end_classif=True); off: the branch's loss reads the mask's logits themselves
    end_classif: bool = True


METHOD_PARAMS: dict[str, type] = {
    "aux_ce": AuxiliaryCEParams,
    "balanced": BalancedMultiModalParams,
    "dropout": FeatureDropoutParams,
    "finetune": FineTuneParams,
    "gblending": GradientBlendingParams,
    "mla": AlternatingUnimodalAdaptationParams,
    "modality_dropout": ModalityDropoutParams,
    "naive": NaiveParams,
    "ogm_ge": OGMGEParams,
    "qmf": QualityAwareFusionParams,
    "rubi": RUBiParams,
    "self_distill": SelfDistillationParams,
    "ume": UniModalEnsembleParams,
    "umt": UniModalTeacherParams,
    "unimodal": UniModalParams,
}

# The methods `pretrain-unimodal` trains a one-modality model with: the others fuse, weigh or drop modalities
# (they need two) or read a fusion run. ``umt`` there distils each modality's model from its own teacher.
ONE_MODALITY_METHODS = ("unimodal", "naive", "dropout", "umt")

# Methods and fusions defined for exactly two modalities, with the reason: `mmtool train` refuses them on any
# other number before a run folder exists. Every other method takes M >= 2 modalities (OGM-GE too: paper 003
# runs it on three-modality IEMOCAP; mmtool.methods.ogm_ge compares each score with the mean of the others)
# (method, option) -> why the option is defined for two modalities only (MMTM and `balanced` take any number)
TWO_MODALITY_OPTIONS = {
    ("balanced", "bug_compatible"): "it reproduces a bug of the authors' released two-modality code",
}

METHOD_SUMMARIES: dict[str, str] = {
    "aux_ce": "Aux-CE: CE on the fused logits + CE of extra uni-modal linear heads, equal weights",
    "balanced": "greedy-learning fix: MMTM re-balancing steps guided by d_speed (guided/random/vanilla)",
    "dropout": "naive fusion + dropout (p = 0.5) on the features before the head, training only",
    "finetune": "fine-tune from uni-modal pre-trained encoders (own encoder lr), CE on the fused logits",
    "gblending": "G-Blending: fused + uni-modal head losses weighted by the overfitting-to-generalisation ratio",
    "mla": "MLA: alternating uni-modal steps, shared head with RLS gradient projection (head: shared)",
    "modality_dropout": "naive fusion + modality dropout: zero one modality's features per sample with prob. 1/3",
    "naive": "naive late fusion: CE on the fused logits (any head)",
    "ogm_ge": "OGM-GE: scale down the dominant modality's encoder gradients (+ Gaussian noise)",
    "rubi": "RUBi: fused logits masked by sigmoid of per-modality branches (no gradient into encoders) + branch CE",
    "qmf": "QMF: energy-weighted late fusion; fused + uni-modal CE + ranking regulariser on sample loss history",
    "self_distill": "self-distillation from a trained naive-fusion run: CE + soft-label KL or feature MSE",
    "ume": "UME: independent uni-modal models, predictions averaged (needs head: ensemble)",
    "umt": "UMT: CE + 50 x MSE feature distillation from frozen uni-modal teachers",
    "unimodal": "uni-modal training of a one-modality model (teachers for UMT, members of UME)",
}

METHOD_REFERENCES: dict[str, str] = {
    "aux_ce": "paper 000, Sec. 4.3 / Tables 5, 9",
    "balanced": "Wu et al. 2022 (paper 002), Sec. 5 and Alg. 1",
    "dropout": "paper 000, App. A.5 / Table 14; paper 001, Table 2",
    "finetune": "paper 000, App. A.6 / Table 15; paper 001, Table 2",
    "gblending": "Wang et al. 2020; paper 000, Tables 1 and 5",
    "mla": "paper 003, Alg. 1, Eq. 1-8",
    "modality_dropout": "paper 000, App. A.5 / Table 14; paper 001, Table 2",
    "naive": "paper 000, Sec. 3.2 / Table 5",
    "ogm_ge": "Peng et al. 2022; paper 000, Tables 1 and 5",
    "rubi": "Cadene et al. 2019; paper 002, Sec. 6.4 / Table 1",
    "qmf": "Zhang et al. 2023 (ICML); paper 003, Tables 1-3 / App. A.2",
    "self_distill": "paper 000, Sec. 4.3 / Table 8; paper 001, Table 2",
    "ume": "paper 000, Sec. 3.3 / App. A.2",
    "umt": "paper 000, Alg. 1 / App. A.2",
    "unimodal": "paper 000, Sec. 3.3",
}

"""Paper 000's Kinetics-400 Tables 6 (UMT vs AVSlowFast) and 22 (uni-modal accuracy, the paper's vs Xiao et al.'s),
where part of the paper's numbers are cited from another paper.

Both tables are by RGB encoder, SlowFast-50 and SlowFast-101. The Kinetics-400 recipes train SlowFast-50
(recipes/_base/kinetics400.yaml, PySlowFast's SLOWFAST_8x8_R50), so the SlowFast-50 cells read the runs the other
Kinetics-400 tables make (``unimodal``, ``umt``); the SlowFast-101 cells read runs with
``model.encoders.video.name=slowfast101`` on top of the same recipes (SLOWFAST_8x8_R101_101_101 differs from the
R50 config only in the backbone; recipes/_base/kinetics400_slowfast101.yaml): a uni-modal run (the UMT teachers,
Table 22) and a UMT run (Table 6). The audio encoder is the same ResNet-18 in both uni-modal runs; Table 22's
Uni-Audio is the SlowFast-50 run's. AVSlowFast itself is not implemented: its rows show the cited numbers only.
"""

from __future__ import annotations

from mmtool.analysis.paper_defs import PaperTable, Run, Source, TablePlan, test_acc

CITED = "cited: Xiao et al. 2020"


def slowfast(depth: int) -> tuple[Run, Run]:
    """The uni-modal run and the UMT run with SlowFast-``depth`` as the video encoder (50: the recipes' own)."""
    if depth == 50:
        return Run("unimodal", "pretrain-unimodal", "pretrain"), Run("umt", "train", "umt", (("teachers", "unimodal"),))
    encoder = f"model.encoders.video.name=slowfast{depth}"
    uni = Run(f"unimodal_slowfast{depth}", "pretrain-unimodal", "pretrain", overrides=(encoder,))
    umt = Run(f"umt_slowfast{depth}", "train", "umt", (("teachers", uni.name),), (encoder,))
    return uni, umt


UNI50, UMT50 = slowfast(50)
UNI101, UMT101 = slowfast(101)
TABLES: dict[str, TablePlan] = {
    "table6": TablePlan(("kinetics400",), (UNI50, UMT50, UNI101, UMT101), "kinetics400"),
    "table22": TablePlan(("kinetics400",), (UNI50, UNI101), "kinetics400"),
}

PAPER: dict[str, PaperTable] = {
    "table6": PaperTable(
        "Table 6. Top-1 test accuracy of UMT and Audio-Visual SlowFast (Xiao et al., 2020) on Kinetics-400. "
        "AVSlowFast is an representative intermediate fusion method.",
        "Method (RGB Encoder)",
        ("Acc",),
        {
            "AVSlowFast (SlowFast-50)": (f"77.0 ({CITED})",),
            "UMT (ours) (SlowFast-50)": (78.1,),
            "AVSlowFast (SlowFast-101)": (f"78.8 ({CITED})",),
            "UMT (ours) (SlowFast-101)": (79.4,),
        },
        notes=(
            "AVSlowFast's numbers are Xiao et al.'s (2020), cited by the paper; mmtool does not implement AVSlowFast "
            "(ours: —). Ours: UMT with the SlowFast-50 video encoder (runs umt, teachers unimodal: the recipes' "
            "own) and SlowFast-101 (umt_slowfast101, teachers unimodal_slowfast101).",
        ),
    ),
    "table22": PaperTable(
        "Table 22. Uni-Modal Performance of ours and Xiao et al. (2020)'s on Kinetics-400",
        "Model",
        ("ours (paper 000)", "Xiao et al. (2020)"),
        {
            "Uni-Audio": (23.5, f"24.8 ({CITED})"),
            "Uni-RGB (SlowFast-50)": (74.9, f"75.6 ({CITED})"),
            "Uni-RGB (SlowFast-101)": (77.2, f"77.9 ({CITED})"),
        },
        notes=(
            "Column \"ours (paper 000)\": the paper's own uni-modal models; \"Xiao et al. (2020)\": cited by the "
            "paper, no run of ours (—). Our Uni-Audio is the audio model of the SlowFast-50 uni-modal run "
            "(unimodal; unimodal_slowfast101 trains the same ResNet-18 audio model again).",
        ),
    ),
}


def _uni(depth: int, modality: str) -> Source:
    run = UNI50 if depth == 50 else UNI101
    return Source("kinetics400", run.name, ("modalities", modality, "test_accuracy"))


OURS: dict[str, dict[str, tuple[Source | None, ...]]] = {
    "table6": {
        "AVSlowFast (SlowFast-50)": (None,),
        "UMT (ours) (SlowFast-50)": (test_acc("kinetics400", UMT50.name),),
        "AVSlowFast (SlowFast-101)": (None,),
        "UMT (ours) (SlowFast-101)": (test_acc("kinetics400", UMT101.name),),
    },
    "table22": {
        "Uni-Audio": (_uni(50, "audio"), None),
        "Uni-RGB (SlowFast-50)": (_uni(50, "video"), None),
        "Uni-RGB (SlowFast-101)": (_uni(101, "video"), None),
    },
}

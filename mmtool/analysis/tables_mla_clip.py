"""Paper 003's (MLA) Table 4 and its appendix version with std, Table 7, as the target ``mla-table4``.

Sec. 4.3.4 ("Robustness Analysis of the Pre-trained Model") changes Food-101's encoders to "pre-trained CLIP encoders
(ViT-B/32 pre-trained model loaded as both the image and text encoders)" and reports, over three seeds, the test
accuracy of each modality alone ("Image", "Text") and fused ("Multi") for two methods: "CLIP" and "CLIP + MLA".

Runs: the Food-101 method recipes with recipes/_base/food101_clip.yaml merged onto them (``TablePlan.fragments``):
frozen CLIP ViT-B/32 towers (the paper uses CLIP's "pre-trained features"; the fragment says why), CLIP's image
normalisation, CLIP's tokenizer and 77 tokens. "CLIP + MLA" is recipes/food101/mla.yaml (shared head). The paper does
not say how "CLIP" alone is trained; ours is the joint training MLA is compared with throughout, with MLA's code's
default fusion (main.py ``fusion_method`` concat): recipes/food101/naive_concat.yaml. A modality's cell is the fused
model's head on that modality's features alone (``unimodal_head_accuracy``), as Table 1's Concat and MLA cells.
The runs are named ``clip_concat`` and ``clip_mla``, apart from Table 1's and Figure 3's runs on other encoders.
"""

from __future__ import annotations

from mmtool.analysis.paper_defs import PaperTable, Run, Source, TablePlan, test_acc

COLUMNS = ("Image", "Text", "Multi")
MODALITIES = {"Image": "image", "Text": "text"}
# method as the paper prints it -> (our run, its recipe in recipes/food101/)
METHODS = {"CLIP": ("clip_concat", "naive_concat"), "CLIP + MLA (Ours)": ("clip_mla", "mla")}
# Table 7 of paper 003 (Table 4's means with the std over three seeds)
PAPER_ROWS = {
    "CLIP": ("63.07 ± 0.12", "83.98 ± 0.08", "93.07 ± 0.08"),
    "CLIP + MLA (Ours)": ("72.22 ± 0.10", "85.34 ± 0.06", "93.47 ± 0.04"),
}
FRAGMENT = ("food101", "recipes/_base/food101_clip.yaml")
SMOKE_FRAGMENT = ("food101", "recipes/_base/smoke/food101_clip.yaml")

TABLES = {
    "mla-table4": TablePlan(
        ("food101",),
        tuple(Run(run, "train", recipe) for run, recipe in METHODS.values()),
        "food101",
        all_seeds=True,
        fragments=(FRAGMENT,),
        smoke_fragments=(SMOKE_FRAGMENT,),
    )
}

PAPER = {
    "mla-table4": PaperTable(
        "Paper 003, Table 4 (with Table 7's std). Results on the Food-101 dataset achieved by changing the encoders "
        "to the CLIP pre-trained model. We report the average test accuracy (%) from three different seeds.",
        "Method",
        COLUMNS,
        PAPER_ROWS,
        digits=2,
        notes=(
            'Ours: frozen CLIP ViT-B/32 towers (projected 512-d features) and a trained head: "CLIP" is joint '
            "training with the concat head (recipes/food101/naive_concat.yaml; the paper does not name its fusion), "
            '"CLIP + MLA" is recipes/food101/mla.yaml, both with recipes/_base/food101_clip.yaml merged on; a '
            "modality's cell is the fused model's head on that modality's features alone.",
        ),
    )
}


def _row(run: str) -> tuple[Source | None, ...]:
    cells = [Source("food101", run, ("unimodal_head_accuracy", MODALITIES[c], "test")) for c in COLUMNS[:-1]]
    return (*cells, test_acc("food101", run))


OURS = {"mla-table4": {method: _row(run) for method, (run, _) in METHODS.items()}}

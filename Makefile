# Targets are results. `make quickstart` runs the default job; `make table20` reproduces Tables 20/21.
PYTHON ?= python
MMTOOL ?= mmtool
SEEDS ?= 0 1 2
T20 := runs/table20
QS := runs/quickstart
LZ := runs/laziness
MT := runs/methods
GR := runs/greedy
# The studies below are plans (mmtool/analysis/study_plans.py): `mmtool reproduce NAME` prepares the data, runs
# what did not finish before (a run is reused while its recipe and inputs are unchanged) and writes the table.

.PHONY: install test lint quickstart table20 laziness methods probes greedy bench clean

install:
	$(PYTHON) -m pip install -c constraints.txt -e ".[dev]"

test:
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check mmtool tests benchmarks

# prep -> pretrain-unimodal -> decide | train --from-decision, on synthetic dataset gamma (App. A.10)
quickstart:
	rm -rf $(QS)
	$(MMTOOL) prep synth-gamma > /dev/null
	$(MMTOOL) pretrain-unimodal --dataset synth-gamma --run-dir $(QS)/pretrain > /dev/null
	$(MMTOOL) decide --dataset synth-gamma --teachers $(QS)/pretrain --run-dir $(QS)/decide \
		| $(MMTOOL) train --from-decision - --run-dir $(QS)/train > $(QS)/train.json
	@echo "runs in $(QS)/"

# Table 20 (uni-modal m1, m2 and multi-modal on alpha, beta, gamma) and Table 21, over $(SEEDS) -> $(T20_OUT).
# Runs go $(JOBS) at a time with $(T20_THREADS) thread each: the MLPs are small and the cores two, so two one-thread
# runs do about twice the work of one two-thread run (and 1 or 2 threads give the same numbers).
# NAME+KEY in T20_SETS: the set NAME with data.KEY=true (synth-gamma+balanced: γ's balanced reading).
# T20_ARGS: key=value for prep and every run (benchmarks/bench_table20.py --quick uses it).
JOBS ?= 2
T20_THREADS ?= 1
T20_SETS ?= synth-gamma synth-gamma+balanced synth-alpha synth-beta
T20_ARGS ?=
T20_OUT ?= results/table20.md

table20:
	$(MMTOOL) reproduce table20 --seeds "$(SEEDS)" --groups "$(T20_SETS)" --jobs $(JOBS) --threads $(T20_THREADS) \
	  --runs $(T20) --out $(T20_OUT) $(foreach a,$(T20_ARGS),--set $(a))

# Table 1/7-style probes: uni-modal vs naive-fusion vs UMT encoders on synth-lazy and digits-colored -> results/laziness.md
laziness:
	$(MMTOOL) reproduce laziness --seeds "$(SEEDS)" --jobs 2 --threads 1 --runs $(LZ)

# Every method on the CPU datasets (Table 5/9 analogue) -> results/methods.md; the methods it leaves out are named
# with where they are reproduced (mmtool/analysis/study_plans.py, METHODS_ELSEWHERE).
methods:
	$(MMTOOL) reproduce methods --seeds "$(SEEDS)" --jobs 2 --threads 1 --runs $(MT)

# Linear probes of every encoder that `make methods` trains (Tables 1/7 across methods) -> results/probes.md
# (the methods' runs are reused, or made first)
probes:
	$(MMTOOL) reproduce probes --seeds "$(SEEDS)" --jobs 2 --threads 1 --runs $(MT)

# Paper 002, Sec. 6.4: vanilla vs guided vs random balanced learning on MMTM fusion of colored-and-gray
# digits, MLP and CNN branches, over $(SEEDS) -> results/greedy.md (+ results/greedy_<encoder>.png)
greedy:
	$(MMTOOL) reproduce greedy --seeds "$(SEEDS)" --runs $(GR)

bench:
	mkdir -p runs/bench
	$(PYTHON) benchmarks/bench_loop.py
	$(PYTHON) benchmarks/bench_synthetic.py
	$(PYTHON) benchmarks/bench_resnet.py
	$(PYTHON) benchmarks/bench_step.py --json runs/bench/step.json
	$(PYTHON) benchmarks/bench_data.py --json runs/bench/data.json
	$(PYTHON) benchmarks/bench_ddp.py --json runs/bench/ddp.json

# Wall time of `make table20` against the matmul floor of its FLOPs (minutes; not part of `make bench`)
.PHONY: bench-table20
bench-table20:
	mkdir -p runs/bench
	$(PYTHON) benchmarks/bench_table20.py --json runs/bench/table20.json

clean:
	rm -rf runs data .pytest_cache

# ---------------------------------------------------------------------------------------------------------------
# Paper 000's tables on UCF101, VGG-Sound, Kinetics-400 and ModelNet40 -> results/tableN.md, the paper's numbers
# beside ours (docs/tables.md). Each target is one `mmtool reproduce` (mmtool/analysis/paper_plans.py says which
# runs a table reads):
#   make table9 DATA=/data/UCF101           DATA: the raw published layout of the table's main dataset (data_prep/*.md)
#   make table3 DATA=/data/UCF101 VGGSOUND=/data/vggsound   UCF101=, VGGSOUND=, KINETICS=, MODELNET40= name each
#                                           dataset of a table that spans several (table1 takes only these)
#   make table9 SMOKE=1                     fixture copies (tests/fixtures/smoke.py), recipes/_base/smoke/<set>.yaml
#                                           merged last, one seed -> results/smoke/tableN.md
# Runs live in $(PT)/<set>/seed<k>/<run>-<id>/, <id> a hash of the run's resolved recipe and inputs: a finished run
# with the same identity is reused by every later target (table5 after table1 trains only what table1 did not),
# a changed recipe value or cache makes new runs. $(PT_JOBS) runs at a time. SMOKE starts from scratch: it checks
# the code, and a run reused from before a code change would check nothing. Tables 5, 8, 10, 14 and ws-table2 average $(SEEDS)
# (the papers give mean ± std); the others run the first seed. PT_ARGS: further `mmtool reproduce` options
# (--executor slurm --slurm partition=gpu ..., --dry-run, -r NAME=FILE: a fragment merged last into dataset NAME's runs):
#   make table5 KINETICS=/data/k400 PT_ARGS="-r kinetics400=recipes/_base/kinetics400_r3d18.yaml"   R3D-18, CPU-sized
#   make table5 KINETICS=/data/k400 PT_ARGS="-r kinetics400=recipes/_base/kinetics400_slowfast101.yaml"   SlowFast-101
PAPER_TABLES := table1 table3 table4 table5 table7 table8 table9 table10 table2 table16 table17 table6 table22 ws-fig2 table18 ws-table1 fig2 \
  table12 table13 table14 table15 ws-table2 mla-table1 mla-table2 mla-table3 mla-fig3 mla-fig2 mla-table4 \
  greedy-table1 greedy-3view greedy-fig2 greedy-fig7 greedy-fig3 greedy-fig4 greedy-fig8 greedy-fig5 greedy-fig9
.PHONY: $(PAPER_TABLES)
PT := runs/$(if $(SMOKE),smoke/)paper
PT_JOBS ?= $(if $(SMOKE),2,1)
PT_ARGS ?=
PT_DATA = $(if $(DATA),--data $(DATA)) $(if $(UCF101),--data ucf101=$(UCF101)) \
  $(if $(VGGSOUND),--data vggsound=$(VGGSOUND)) $(if $(KINETICS),--data kinetics400=$(KINETICS)) \
  $(if $(MODELNET40),--data modelnet40=$(MODELNET40)) $(if $(CREMAD),--data cremad=$(CREMAD)) \
  $(if $(FOOD101),--data food101=$(FOOD101)) $(if $(MVSA),--data mvsa=$(MVSA)) $(if $(IEMOCAP),--data iemocap=$(IEMOCAP)) \
  $(if $(KINETICS_SOUNDS),--data kinetics-sounds=$(KINETICS_SOUNDS)) \
  $(if $(COLORED_MNIST),--data colored-mnist=$(COLORED_MNIST)) $(if $(NVGESTURE),--data nvgesture=$(NVGESTURE))
PT_REPRODUCE = $(if $(SMOKE),rm -rf $(PT) && )$(MMTOOL) reproduce $@ \
  $(if $(SMOKE),--smoke,$(PT_DATA) --seeds "$(SEEDS)" $(if $(QUICK),--quick)) --jobs $(PT_JOBS) $(PT_ARGS)

# Table 1: linear evaluation of the encoders of each late-fusion method and of uni-modal training
table1:
	$(PT_REPRODUCE)

# Table 3: multi-modal linear classifier on the frozen uni-modal encoders vs. averaged predictions (decide)
table3:
	$(PT_REPRODUCE)

# Table 4: the uni-modal classifiers split out of decide's multi-modal linear classifier on UCF101
table4:
	$(PT_REPRODUCE)

# Table 5: late-fusion methods and UMT on VGG-Sound and Kinetics-400, over $(SEEDS)
table5:
	$(PT_REPRODUCE)

# Table 7: linear evaluation of the uni-modal, naive-fusion and UMT encoders on VGG-Sound and Kinetics-400
table7:
	$(PT_REPRODUCE)

# Table 8: self-distillation from naive fusion (soft labels, features) vs. UMT on VGG-Sound, over $(SEEDS)
table8:
	$(PT_REPRODUCE)

# Table 9: UME (the uni-modal models' averaged predictions) vs. joint training on UCF101
table9:
	$(PT_REPRODUCE)

# Table 10: UME vs. paper 002's MMTM model trained plainly, with random and with guided re-balancing, on
# ModelNet40, over $(SEEDS) (the paper gives mean ± std)
table10:
	$(PT_REPRODUCE)

# Table 2: per-class accuracy of the uni-modal models, their averaged predictions, decide's linear classifier and
# naive fusion on VGG-Sound: the paper's classes and the classes where fusion beats the sum of the uni-modal models
table2:
	$(PT_REPRODUCE)

# Table 16: the same per-class comparison on Kinetics-400 (KINETICS= or DATA=), averaged predictions from `ume`
table16:
	$(PT_REPRODUCE)

# Table 17: per-class comparison on UCF101, top-10 classes by naive fusion minus the best uni-modal model
table17:
	$(PT_REPRODUCE)

# Table 6: UMT with SlowFast-50/101 video encoders on Kinetics-400; AVSlowFast's numbers cited (Xiao et al. 2020)
table6:
	$(PT_REPRODUCE)

# Table 22: uni-modal Kinetics-400 models with SlowFast-50/101 video encoders; Xiao et al.'s numbers cited
table22:
	$(PT_REPRODUCE)

# Paper 001, Figure 2: per-class linear probes of four video encoders on the uni-modal audio model's top-20
# VGG-Sound classes -> results/ws-fig2.md and ws-fig2.png
ws-fig2:
	$(PT_REPRODUCE)

# Table 18 (App. A.8): uni-modal models distilled from the uni-modal teachers, combined by a linear classifier, vs. UMT
table18:
	$(PT_REPRODUCE)

# Paper 001, Table 1: train and test accuracy of linear probes per training method on VGG-Sound (one-teacher UMT too)
ws-table1:
	$(PT_REPRODUCE)

# Figure 2: linear probes of the VGG-Sound RGB and UCF101 flow encoders after every epoch of each method (+ fig2.png)
fig2:
	$(PT_REPRODUCE)

# Table 12 (App. A.3): naive fusion (linear head) under SGD, RMSprop, Adagrad, Adadelta, AdamW and Adam on
# VGG-Sound, with linear evaluation of each run's encoders (mmtool/analysis/tables_sweeps.py)
table12:
	$(PT_REPRODUCE)

# Table 13 (App. A.4): UMT's distillation weight 0, 1, 10, 20, 50, 100 on VGG-Sound and Kinetics-400
table13:
	$(PT_REPRODUCE)

# Table 14 (App. A.5): dropout and modality dropout vs. naive fusion and UMT on VGG-Sound, over $(SEEDS)
table14:
	$(PT_REPRODUCE)

# Table 15 (App. A.6): fine-tuning the uni-modal pre-trained encoders at encoder lr 1e-3 ... 1e-6 and 0 on
# VGG-Sound, with linear evaluation of the fine-tuned encoders
table15:
	$(PT_REPRODUCE)

# Paper 001, Table 2: nine methods on VGG-Sound (dropout, modality dropout, pre-train + fine-tune, video-/audio-only
# distillation, self-distillation, G-Blending, naive fusion, UMT), mean ± std over $(SEEDS)
ws-table2:
	$(PT_REPRODUCE)

# Paper 003 (MLA), Table 1 / Table 5: Sum, Concat, Late Fusion, FiLM, BiGated, OGM-GE, QMF and MLA per modality and
# fused, mean ± std over $(SEEDS), on CREMA-D, Kinetics-Sounds (MLA's setting: recipes/_base/kinetics-sounds_mla.yaml),
# Food-101, MVSA and IEMOCAP (mmtool/analysis/tables_mla.py); the text
# datasets need the tokenizer (a fragment with data: {tokenizer: DIR}, as mla-table2), e.g.
#   make mla-table1 CREMAD=/data/crema-d FOOD101=/data/upmc-food101 PT_ARGS="-r food101=my_tokenizer.yaml"
# Every method of a text dataset runs on ResNet-18s and a 512-wide BERT (recipes/_base/bert512.yaml); the paper's own
# M3AE / CAV-MAE encoders (weights in weights/, docs/encoders.md), -r repeated per dataset beside its tokenizer's:
#   PT_ARGS="-r food101=recipes/_base/m3ae_image_text.yaml -r mvsa=recipes/_base/m3ae_image_text.yaml -r iemocap=recipes/_base/iemocap_m3ae.yaml ..."
mla-table1:
	$(PT_REPRODUCE)

# Paper 002, Sec. 7: three views of ModelNet40 (front, rear, side), vanilla vs guided balanced learning, over $(SEEDS)
#   make greedy-3view DATA=/data/modelnet40_images_new_12x
greedy-3view:
	$(PT_REPRODUCE)

# Paper 003 (MLA), Table 3: MLA with and without head gradient modification and dynamic fusion, over $(SEEDS)
mla-table3:
	$(PT_REPRODUCE)

# Paper 003 (MLA), Table 2: IEMOCAP at missing rates 10-70% (Late Fusion, QMF, MLA), over $(SEEDS); the tokenizer:
#   make mla-table2 DATA=/data/IEMOCAP PT_ARGS="-r iemocap=my_tokenizer.yaml"   (data: {tokenizer: /models/bert-base-uncased})
mla-table2:
	$(PT_REPRODUCE)

# Paper 003 (MLA), Figure 3: the modality gap of Concat and MLA on Food-101 (+ mla-fig3.png); tokenizer as mla-table2
mla-fig3:
	$(PT_REPRODUCE)

# Paper 003 (MLA), Figure 2: Kinetics-Sounds with audio or video missing from 10-70% of the training clips, MLA vs QMF
# (+ mla-fig2.png); the plan merges recipes/_base/kinetics-sounds_mla.yaml (MLA's KS setting) into every run, and
# recipes/_base/smoke/kinetics-sounds_mla.yaml with SMOKE=1.   make mla-fig2 DATA=/data/k400
mla-fig2:
	$(PT_REPRODUCE)

# Paper 003 (MLA), Table 4 / Table 7: Food-101 with frozen CLIP ViT-B/32 towers (recipes/_base/food101_clip.yaml merged
# onto recipes/food101/{naive_concat,mla}.yaml), "CLIP" and "CLIP + MLA", mean ± std over $(SEEDS). The CLIP folder
# (tokenizer and weights) comes in a fragment of your own:
#   make mla-table4 DATA=/data/food101 PT_ARGS="-r food101=my_clip.yaml"
#   (my_clip.yaml: data: {tokenizer: /models/clip-vit-base-patch32}, model: {encoders: {image: {pretrained:
#    /models/clip-vit-base-patch32}, text: {pretrained: /models/clip-vit-base-patch32}}})
# SMOKE=1: tiny CLIP towers from a config and the fixture's CLIP tokenizer (recipes/_base/smoke/food101_clip.yaml)
mla-table4:
	$(PT_REPRODUCE)

# Paper 002, Table 1: the best SE uni-modal network and the MMTM model trained vanilla, with RUBi, random and guided
# re-balancing, on Colored-and-gray-MNIST, ModelNet40 and NVGesture (scratch and Kinetics-pretrained I3D: the port's
# rgb_imagenet.pt in weights/i3d_rgb_imagenet.pt), over $(SEEDS) (mmtool/analysis/tables_greedy.py):
#   make greedy-table1 COLORED_MNIST=/data/mnist MODELNET40=/data/modelnet40v1 NVGESTURE=/data/nvgesture
greedy-table1:
	$(PT_REPRODUCE)

# Paper 002 (greedy learner), Figs. 2 and 7: learning-rate sweeps of vanilla MMTM training with two distinct or two
# identical modalities (data.duplicate), histograms of d_util and d_speed (+ greedy-fig2.png, greedy-fig7.png).
#   make greedy-fig2 DATA=/data/modelnet40_images_new_12x NVGESTURE=/data/nvgesture   make greedy-fig7 DATA=/data/MNIST
greedy-fig2 greedy-fig7:
	$(PT_REPRODUCE)

# Paper 002, Figs. 3, 4 and 8: ModelNet40 with an L1 penalty (optim.l1), ten lambdas in [1e-9, 1e-3], three repeats;
# the three targets read the same runs (R(f) vs lambda; |d_util|, |d_speed| vs R(f); vs lambda)
greedy-fig3 greedy-fig4 greedy-fig8:
	$(PT_REPRODUCE)

# Paper 002, Fig. 5: d_util of vanilla, guided and random training over the sweeps of Fig. 2 (ModelNet40, NVGesture);
# Fig. 9: guided training on ModelNet40 at lr 0.1 per Q (alpha 0.01) and per alpha (Q 5)
greedy-fig5 greedy-fig9:
	$(PT_REPRODUCE)

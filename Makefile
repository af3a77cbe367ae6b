# Targets are results. `make quickstart` runs the default job; `make table20` reproduces Tables 20/21.
PYTHON ?= python
MMTOOL ?= mmtool
SEEDS ?= 0 1 2
T20 := runs/table20
QS := runs/quickstart

LZ := runs/laziness
LAZY_SETS ?= synth-lazy digits-colored

MT := runs/methods
METHOD_SETS ?= synth-lazy digits-colored digits-twoview
PLAIN_METHODS := naive naive_linear naive_attention aux_ce gblending ogm_ge dropout modality_dropout mla ume
TEACHER_METHODS := umt umt_m1 umt_m2 finetune
# registered methods that `make methods` leaves out, and where they are reproduced instead
METHODS_ELSEWHERE := balanced="make greedy (it needs MMTM fusion; paper 002 on colored-and-gray digits)" \
	unimodal="mmtool pretrain-unimodal (one model per modality, the first stage of every table)"

GR := runs/greedy
GREEDY := vanilla guided random

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
# (dataset, seed) jobs run $(JOBS) at a time with $(T20_THREADS) thread each: the MLPs are small and the cores two, so
# two one-thread jobs do about twice the work of one two-thread job (and 1 or 2 threads give the same numbers).
# A job's three commands run in one Python process through the CLI (python -m mmtool.chain: torch starts once
# per job, not per command); gamma, the largest set, comes first so the longest jobs start first.
# T20_ARGS: key=value overrides for every command of a job (benchmarks/bench_table20.py --quick uses it).
JOBS ?= 2
T20_THREADS ?= 1
T20_SETS ?= synth-gamma synth-alpha synth-beta
T20_ARGS ?=
T20_OUT ?= results/table20.md
T20_JOBS := $(foreach d,$(T20_SETS),$(foreach s,$(SEEDS),table20-job/$(d)/$(s)))

table20:
	rm -rf $(T20) && mkdir -p $(T20)
	$(MAKE) --no-print-directory -j$(JOBS) $(T20_JOBS)
	$(PYTHON) -m mmtool.analysis.table20 $(T20) $(T20_OUT)

table20-job/%:
	@d=$(word 1,$(subst /, ,$*)); s=$(word 2,$(subst /, ,$*)); R=$(T20)/$$d/seed$$s; L=$(T20)/log-$$d-$$s.txt; \
	A="data.name=$$d data.seed=$$s train.seed=$$s $(T20_ARGS)"; export OMP_NUM_THREADS=$(T20_THREADS); set -e; \
	echo "table20: $$d seed $$s (log: $$L)" >&2; \
	$(PYTHON) -m mmtool.chain "prep $$d data.seed=$$s $(T20_ARGS)" \
	  "pretrain-unimodal -r recipes/table20/unimodal.yaml $$A --run-dir $$R/unimodal" \
	  "train naive -r recipes/table20/multimodal.yaml $$A --run-dir $$R/multimodal" > /dev/null 2>> $$L \
	  || { echo "table20: $$d seed $$s failed; the end of $$L:" >&2; tail -n 15 $$L >&2; exit 1; }

# Table 1/7-style probes: uni-modal vs naive-fusion vs UMT encoders on the laziness datasets, over $(SEEDS)
laziness:
	rm -rf $(LZ) && mkdir -p $(LZ)
	set -e; for s in $(SEEDS); do for d in $(LAZY_SETS); do \
	  echo "laziness: $$d seed $$s (log: $(LZ)/log.txt)" >&2; \
	  R=$(LZ)/$$d/seed$$s; A="-d $$d data.seed=$$s train.seed=$$s"; \
	  $(MMTOOL) prep $$d data.seed=$$s > /dev/null 2>> $(LZ)/log.txt; \
	  $(MMTOOL) pretrain-unimodal $$A --run-dir $$R/unimodal > /dev/null 2>> $(LZ)/log.txt; \
	  $(MMTOOL) train naive $$A --run-dir $$R/naive > /dev/null 2>> $(LZ)/log.txt; \
	  $(MMTOOL) train umt $$A --teachers $$R/unimodal --run-dir $$R/umt > /dev/null 2>> $(LZ)/log.txt; \
	  for r in unimodal naive umt; do \
	    $(MMTOOL) probe $$A --run $$R/$$r --run-dir $$R/probe-$$r > /dev/null 2>> $(LZ)/log.txt; \
	  done; \
	done; done
	$(PYTHON) -m mmtool.analysis.laziness $(LZ) results/laziness.md

# Every method on the CPU datasets (Table 5/9 analogue), over $(SEEDS) -> results/methods.md.
# (dataset, seed) jobs run two at a time with one thread each: the models are small, the cores are two.
METHOD_JOBS := $(foreach d,$(METHOD_SETS),$(foreach s,$(SEEDS),methods-job/$(d)/$(s)))

methods:
	rm -rf $(MT) && mkdir -p $(MT)
	@for m in $(METHODS_ELSEWHERE); do echo "methods: not in this table: $${m%%=*}, see $${m#*=}" >&2; done
	$(MAKE) --no-print-directory -j2 $(METHOD_JOBS)
	$(PYTHON) -m mmtool.analysis.methods_table $(MT) results/methods.md

# The method recipes are written for synth-gamma; recipes/_base/data/<set>.yaml, merged after them, moves
# each one to another set with that set's own settings (a dataset fragment; nothing is injected here).
methods-job/%:
	@d=$(word 1,$(subst /, ,$*)); s=$(word 2,$(subst /, ,$*)); R=$(MT)/$$d/seed$$s; L=$(MT)/log-$$d-$$s.txt; \
	D="-r recipes/_base/data/$$d.yaml"; A="data.seed=$$s train.seed=$$s"; export OMP_NUM_THREADS=1; set -e; \
	echo "methods: $$d seed $$s (log: $$L)" >&2; \
	$(MMTOOL) prep $$d data.seed=$$s > /dev/null 2>> $$L; \
	$(MMTOOL) pretrain-unimodal -r recipes/synth-gamma/pretrain.yaml $$D $$A --run-dir $$R/unimodal > /dev/null 2>> $$L; \
	for m in $(PLAIN_METHODS); do \
	  $(MMTOOL) train -r recipes/synth-gamma/$$m.yaml $$D $$A --run-dir $$R/$$m > /dev/null 2>> $$L; \
	done; \
	for m in $(TEACHER_METHODS); do \
	  $(MMTOOL) train -r recipes/synth-gamma/$$m.yaml $$D $$A --teachers $$R/unimodal --run-dir $$R/$$m > /dev/null 2>> $$L; \
	done; \
	$(MMTOOL) train -r recipes/synth-gamma/self_distill.yaml $$D $$A method.teacher_run=$$R/naive \
	  --run-dir $$R/self_distill > /dev/null 2>> $$L; \
	$(MMTOOL) ensemble -r recipes/synth-gamma/ensemble.yaml $$D $$A --teachers $$R/unimodal --run-dir $$R/ume_ensemble > /dev/null 2>> $$L

# Paper 002, Sec. 6.4: vanilla vs guided vs random balanced learning on MMTM fusion of colored-and-gray
# digits, MLP and CNN branches, over $(SEEDS) -> results/greedy.md (+ results/greedy_<encoder>.png)
greedy:
	rm -rf $(GR) && mkdir -p $(GR)
	set -e; for s in $(SEEDS); do \
	  $(MMTOOL) prep digits-colored data.seed=$$s > /dev/null 2>> $(GR)/log.txt; \
	  for e in mlp cnn; do for a in $(GREEDY); do \
	    echo "greedy: $$e $$a seed $$s (log: $(GR)/log.txt)" >&2; R=$(GR)/$$e/$$a/seed$$s; A="data.seed=$$s train.seed=$$s"; \
	    case $$e in mlp) F=balanced.yaml;; *) F=balanced_$$e.yaml;; esac; \
	    $(MMTOOL) train -r recipes/digits-colored/$$F method.mode=$$a $$A --run-dir $$R/train > /dev/null 2>> $(GR)/log.txt; \
	    $(MMTOOL) utilization -r recipes/digits-colored/utilization.yaml $$A --run $$R/train --run-dir $$R/utilization \
	      > /dev/null 2>> $(GR)/log.txt; \
	  done; done; \
	done
	$(PYTHON) -m mmtool.analysis.greedy $(GR) results/greedy.md

# Linear probes of every encoder that `make methods` trained (Tables 1/7 across methods) -> results/probes.md
PROBED := unimodal $(PLAIN_METHODS) $(TEACHER_METHODS) self_distill
PROBE_JOBS := $(foreach d,$(METHOD_SETS),$(foreach s,$(SEEDS),probes-job/$(d)/$(s)))

probes:
	@test -d $(MT) || { echo "make probes: no $(MT); run make methods first" >&2; exit 2; }
	$(MAKE) --no-print-directory -j2 $(PROBE_JOBS)
	$(PYTHON) -m mmtool.analysis.probe_table $(MT) results/probes.md

probes-job/%:
	@d=$(word 1,$(subst /, ,$*)); s=$(word 2,$(subst /, ,$*)); R=$(MT)/$$d/seed$$s; L=$(MT)/log-probes-$$d-$$s.txt; \
	A="-r recipes/_base/data/$$d.yaml data.seed=$$s train.seed=$$s"; export OMP_NUM_THREADS=1; set -e; \
	echo "probes: $$d seed $$s (log: $$L)" >&2; \
	for r in $(PROBED); do \
	  rm -rf $$R/probe-$$r; \
	  $(MMTOOL) probe -r recipes/synth-gamma/probe.yaml $$A --run $$R/$$r --run-dir $$R/probe-$$r > /dev/null 2>> $$L; \
	done

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
# Paper 000's tables on UCF101 and VGG-Sound -> results/tableN.md, the paper's numbers beside ours (docs/tables.md).
#   make table9 DATA=/data/UCF101           DATA: the raw published layout of the table's dataset (data_prep/*.md)
#   make table3 DATA=/data/UCF101 VGGSOUND=/data/vggsound   tables 1 and 3 span both sets (UCF101=, VGGSOUND=);
#                                           table 3 also takes MODELNET40=/data/modelnet40_images_new_12x, and
#                                           tables 3, 5 and 7 KINETICS=/data/k400 (the cvdfoundation copy)
#   make table9 SMOKE=1                     fixture copies (tests/fixtures/smoke.py), recipes/_base/smoke/<set>.yaml
#                                           merged last, one seed -> results/smoke/tableN.md
# Runs live in $(PT)/<set>/seed<k>/<run>/. A finished run (results.json) is reused by every later target, so
# table5 after table1 trains only what table1 did not; delete $(PT) after changing a recipe or the data. SMOKE
# starts from scratch. Tables 5 and 8 average $(SEEDS) (paper 001, Table 2 gives these VGG-Sound runs as
# mean ± std); the others run the first seed.
PAPER_TABLES := table1 table3 table4 table5 table7 table8 table9 table10
.PHONY: $(PAPER_TABLES)

ifneq ($(SMOKE),)
PT := runs/smoke/paper
PT_OUT := results/smoke
PT_SEEDS := $(firstword $(SEEDS))
PREP_WORKERS ?= 0
table1 table3 table4 table9: PT_UCF = data/smoke/raw/ucf101
table1 table3 table5 table7 table8: PT_VGG = data/smoke/raw/vggsound
table3 table10: PT_MN40 = data/smoke/raw/modelnet40
table3 table5 table7: PT_K400 = data/smoke/raw/kinetics400
else
PT := runs/paper
PT_OUT := results
PT_SEEDS := $(SEEDS)
PREP_WORKERS ?= 8
table1: PT_UCF = $(UCF101)
table1 table3: PT_VGG = $(VGGSOUND)
table3 table4 table9: PT_UCF = $(or $(UCF101),$(DATA))
table5 table7 table8: PT_VGG = $(or $(VGGSOUND),$(DATA))
table3: PT_MN40 = $(MODELNET40)
table10: PT_MN40 = $(or $(MODELNET40),$(DATA))
table3 table5 table7: PT_K400 = $(KINETICS)
endif
PT_SEED := $(firstword $(PT_SEEDS))
PT_JOINT := naive naive_mlp naive_attention aux_ce gblending ogm_ge
PT_NEED_table1 := UCF101=/path/to/UCF101 and/or VGGSOUND=/path/to/vggsound
PT_NEED_table3 := DATA=/path/to/UCF101 (add VGGSOUND=/path/to/vggsound, KINETICS=/path/to/k400 and MODELNET40=/path/to/modelnet40_images_new_12x for those rows)
PT_NEED_table4 := DATA=/path/to/UCF101
PT_NEED_table9 := DATA=/path/to/UCF101
PT_NEED_table10 := DATA=/path/to/modelnet40_images_new_12x
PT_NEED_table5 := DATA=/path/to/vggsound and/or KINETICS=/path/to/k400
PT_NEED_table7 := DATA=/path/to/vggsound and/or KINETICS=/path/to/k400
PT_NEED_table8 := DATA=/path/to/vggsound

# The data.* settings prep needs (cache root, VGG-Sound's stored sizes), read from the recipes the stages load.
PT_PREP_ARGS = $(PYTHON) -c 'import sys; from mmtool.config import load_recipe; d = load_recipe([a for a in sys.argv[1:] if a != "-r"]).data; \
  print(f"--root {d.root} data.store_size={d.store_size} data.clip_frames={d.clip_frames} data.audio_seconds={d.audio_seconds} \
  data.sample_rate={d.sample_rate} data.flow_stack={d.flow_stack} data.rgb_source={d.rgb_source} \
  data.front_view={d.front_view} data.rear_view={d.rear_view}")'

# Shell helpers of the table targets (stderr of every stage goes to $(PT)/log.txt):
#   prep SET RAW                     with SMOKE, write the fixture copy first; then build SET's cache from RAW
#   run DIR CMD SET RECIPE ARGS...   mmtool CMD -r recipes/SET/RECIPE.yaml [smoke fragment] ARGS --run-dir DIR,
#                                    unless DIR holds a finished run
#   each SET SEED train RUN...       train each recipe RUN into <seed dir>/RUN (umt: with --teachers the seed's
#                                    unimodal run; self_distill*: with its naive run as method.teacher_run)
#   each SET SEED probe RUN...       probe the encoders of each run RUN into <seed dir>/probe-RUN
# With SMOKE, one thread per process: the models are tiny and two threads on two (often shared) cores wait on each other.
PT_SH = set -e; mkdir -p $(PT); L=$(PT)/log.txt; $(if $(SMOKE),export OMP_NUM_THREADS=1;) \
  smoke() { local d=$$1; if [ -n "$(SMOKE)" ]; then echo "-r recipes/_base/smoke/$$d.yaml"; fi; }; \
  prep() { \
    if [ -n "$(SMOKE)" ]; then $(PYTHON) -m tests.fixtures.smoke $$1 $$2 > /dev/null; fi; \
    echo "$@: prep $$1 from $$2 (log: $$L)" >&2; local a; a=$$($(PT_PREP_ARGS) recipes/$$1/pretrain.yaml $$(smoke $$1)); \
    $(MMTOOL) prep $$1 --raw $$2 --workers $(PREP_WORKERS) $$a > /dev/null 2>> $$L \
      || { echo "$@: prep $$1 failed; the end of $$L:" >&2; tail -n 15 $$L >&2; return 1; }; }; \
  run() { \
    local d=$$1 c=$$2 s=$$3 r=$$4; shift 4; \
    if [ -f $$d/results.json ]; then echo "$@: $$d (finished before)" >&2; return 0; fi; \
    echo "$@: $$d (log: $$L)" >&2; rm -rf $$d; \
    $(MMTOOL) $$c -r recipes/$$s/$$r.yaml $$(smoke $$s) "$$@" --run-dir $$d > /dev/null 2>> $$L \
      || { echo "$@: $$c $$s/$$r failed; the end of $$L:" >&2; tail -n 15 $$L >&2; return 1; }; }; \
  each() { \
    local s=$$1 k=$$2 c=$$3 r; local R=$(PT)/$$1/seed$$2; shift 3; \
    for r in "$$@"; do \
      case $$c in \
        probe) run $$R/probe-$$r probe $$s probe data.seed=$$k train.seed=$$k --run $$R/$$r;; \
        train) run $$R/$$r train $$s $$r data.seed=$$k train.seed=$$k $$(teachers $$R $$r);; \
      esac; \
    done; }; \
  teachers() { case $$2 in umt) echo "--teachers $$1/unimodal";; self_distill*) echo "method.teacher_run=$$1/naive";; esac; }
# `mmtool reproduce` builds a table's graph of runs (mmtool/analysis/paper_plans.py), reuses every run whose recipe
# and inputs are unchanged, runs the rest $(PT_JOBS) at a time and writes $(PT_OUT)/TABLE.md. DATA names the table's
# main dataset; UCF101=, VGGSOUND=, KINETICS=, MODELNET40= name each one. SMOKE starts from scratch: it checks
# the code, and a run reused from before a code change would check nothing.
PT_JOBS ?= $(if $(SMOKE),2,1)
PT_DATA = $(if $(DATA),--data $(DATA)) $(if $(UCF101),--data ucf101=$(UCF101)) \
  $(if $(VGGSOUND),--data vggsound=$(VGGSOUND)) $(if $(KINETICS),--data kinetics400=$(KINETICS)) \
  $(if $(MODELNET40),--data modelnet40=$(MODELNET40))
PT_REPRODUCE = $(if $(SMOKE),rm -rf $(PT) && )$(MMTOOL) reproduce $@ $(if $(SMOKE),--smoke,$(PT_DATA) --seeds "$(SEEDS)") \
  --jobs $(PT_JOBS)
# Expanded with the recipe, before its first line runs: without data the target stops at once, saying what to pass.
PT_CHECK = $(if $(SMOKE)$(PT_UCF)$(PT_VGG)$(PT_MN40)$(PT_K400),,$(error make $@: pass $(PT_NEED_$@), or SMOKE=1 (docs/tables.md)))
PT_START = $(if $(SMOKE),rm -rf $(PT);) mkdir -p $(PT)
# With SMOKE the table says so in its first line (--smoke): its numbers come from fixture data and tiny models.
PT_BUILD = $(PYTHON) -m mmtool.analysis.paper_tables $(if $(SMOKE),--smoke )$@ $(PT) $(PT_OUT)/$@.md

# Table 1: linear evaluation of the encoders of each late-fusion method and of uni-modal training
table1:
	@$(PT_CHECK)$(PT_START)
	@$(PT_SH); for s in $(if $(PT_VGG),vggsound) $(if $(PT_UCF),ucf101); do \
	  case $$s in vggsound) prep vggsound $(PT_VGG);; *) prep ucf101 $(PT_UCF);; esac; \
	  run $(PT)/$$s/seed$(PT_SEED)/unimodal pretrain-unimodal $$s pretrain data.seed=$(PT_SEED) train.seed=$(PT_SEED); \
	  each $$s $(PT_SEED) train naive naive_mlp naive_attention gblending ogm_ge; \
	  each $$s $(PT_SEED) probe unimodal naive naive_mlp naive_attention gblending ogm_ge; \
	done
	$(PT_BUILD)

# Table 3: multi-modal linear classifier on the frozen uni-modal encoders vs. averaged predictions (decide)
table3:
	$(PT_REPRODUCE)

# Table 4: the uni-modal classifiers split out of decide's multi-modal linear classifier on UCF101
table4:
	@$(PT_CHECK)$(PT_START)
	@$(PT_SH); R=$(PT)/ucf101/seed$(PT_SEED); prep ucf101 $(PT_UCF); \
	run $$R/unimodal pretrain-unimodal ucf101 pretrain data.seed=$(PT_SEED) train.seed=$(PT_SEED); \
	run $$R/decide decide ucf101 decide data.seed=$(PT_SEED) train.seed=$(PT_SEED) --teachers $$R/unimodal
	$(PT_BUILD)

# Table 5: late-fusion methods and UMT on VGG-Sound and Kinetics-400, over $(SEEDS)
table5:
	@$(PT_CHECK)$(PT_START)
	@$(PT_SH); for s in $(if $(PT_VGG),vggsound) $(if $(PT_K400),kinetics400); do \
	  case $$s in vggsound) prep vggsound $(PT_VGG);; *) prep kinetics400 $(PT_K400);; esac; \
	  for k in $(PT_SEEDS); do \
	    run $(PT)/$$s/seed$$k/unimodal pretrain-unimodal $$s pretrain data.seed=$$k train.seed=$$k; \
	    each $$s $$k train $(PT_JOINT) umt; \
	  done; \
	done
	$(PT_BUILD)

# Table 7: linear evaluation of the uni-modal, naive-fusion and UMT encoders on VGG-Sound and Kinetics-400
table7:
	@$(PT_CHECK)$(PT_START)
	@$(PT_SH); for s in $(if $(PT_VGG),vggsound) $(if $(PT_K400),kinetics400); do \
	  case $$s in vggsound) prep vggsound $(PT_VGG);; *) prep kinetics400 $(PT_K400);; esac; \
	  run $(PT)/$$s/seed$(PT_SEED)/unimodal pretrain-unimodal $$s pretrain data.seed=$(PT_SEED) train.seed=$(PT_SEED); \
	  each $$s $(PT_SEED) train naive umt; \
	  each $$s $(PT_SEED) probe unimodal naive umt; \
	done
	$(PT_BUILD)

# Table 8: self-distillation from naive fusion (soft labels, features) vs. UMT on VGG-Sound, over $(SEEDS)
table8:
	@$(PT_CHECK)$(PT_START)
	@$(PT_SH); prep vggsound $(PT_VGG); for k in $(PT_SEEDS); do \
	  run $(PT)/vggsound/seed$$k/unimodal pretrain-unimodal vggsound pretrain data.seed=$$k train.seed=$$k; \
	  each vggsound $$k train naive self_distill self_distill_feature umt; \
	done
	$(PT_BUILD)

# Table 9: UME (the uni-modal models' averaged predictions) vs. joint training on UCF101
table9:
	$(PT_REPRODUCE)

# Table 10: UME vs. paper 002's MMTM model trained plainly, with random and with guided re-balancing, on
# ModelNet40, over $(SEEDS) (the paper gives mean ± std)
table10:
	@$(PT_CHECK)$(PT_START)
	@$(PT_SH); prep modelnet40 $(PT_MN40); for k in $(PT_SEEDS); do \
	  R=$(PT)/modelnet40/seed$$k; \
	  run $$R/unimodal pretrain-unimodal modelnet40 pretrain data.seed=$$k train.seed=$$k; \
	  run $$R/ume train modelnet40 ume data.seed=$$k train.seed=$$k --teachers $$R/unimodal; \
	  each modelnet40 $$k train mmtm balanced_random balanced; \
	done
	$(PT_BUILD)

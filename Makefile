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
# NAME+KEY: the set NAME with data.KEY=true (synth-gamma+balanced: γ's balanced reading, beside the literal one)
T20_SETS ?= synth-gamma synth-gamma+balanced synth-alpha synth-beta
T20_ARGS ?=
T20_OUT ?= results/table20.md
T20_JOBS := $(foreach d,$(T20_SETS),$(foreach s,$(SEEDS),table20-job/$(d)/$(s)))

table20:
	rm -rf $(T20) && mkdir -p $(T20)
	$(MAKE) --no-print-directory -j$(JOBS) $(T20_JOBS)
	$(PYTHON) -m mmtool.analysis.table20 $(T20) $(T20_OUT)

table20-job/%:
	@d=$(word 1,$(subst /, ,$*)); s=$(word 2,$(subst /, ,$*)); R=$(T20)/$$d/seed$$s; L=$(T20)/log-$$d-$$s.txt; \
	n=$${d%%+*}; o=$${d#$$n}; X=$${o:+data.$${o#+}=true}; \
	A="data.name=$$n data.seed=$$s train.seed=$$s $$X $(T20_ARGS)"; export OMP_NUM_THREADS=$(T20_THREADS); set -e; \
	echo "table20: $$d seed $$s (log: $$L)" >&2; \
	$(PYTHON) -m mmtool.chain "prep $$n data.seed=$$s $$X $(T20_ARGS)" \
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

# The method recipes are written for synth-gamma; recipes/_base/<set>.yaml, merged after them, moves
# each one to another set with that set's own settings (a dataset fragment; nothing is injected here).
methods-job/%:
	@d=$(word 1,$(subst /, ,$*)); s=$(word 2,$(subst /, ,$*)); R=$(MT)/$$d/seed$$s; L=$(MT)/log-$$d-$$s.txt; \
	D="-r recipes/_base/$$d.yaml"; A="data.seed=$$s train.seed=$$s"; export OMP_NUM_THREADS=1; set -e; \
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
	A="-r recipes/_base/$$d.yaml data.seed=$$s train.seed=$$s"; export OMP_NUM_THREADS=1; set -e; \
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
# the code, and a run reused from before a code change would check nothing. Tables 5, 8 and 10 average $(SEEDS)
# (the papers give mean ± std); the others run the first seed. PT_ARGS: further `mmtool reproduce` options
# (--executor slurm --slurm partition=gpu ..., --dry-run).
PAPER_TABLES := table1 table3 table4 table5 table7 table8 table9 table10
.PHONY: $(PAPER_TABLES)
PT := runs/$(if $(SMOKE),smoke/)paper
PT_JOBS ?= $(if $(SMOKE),2,1)
PT_ARGS ?=
PT_DATA = $(if $(DATA),--data $(DATA)) $(if $(UCF101),--data ucf101=$(UCF101)) \
  $(if $(VGGSOUND),--data vggsound=$(VGGSOUND)) $(if $(KINETICS),--data kinetics400=$(KINETICS)) \
  $(if $(MODELNET40),--data modelnet40=$(MODELNET40))
PT_REPRODUCE = $(if $(SMOKE),rm -rf $(PT) && )$(MMTOOL) reproduce $@ \
  $(if $(SMOKE),--smoke,$(PT_DATA) --seeds "$(SEEDS)") --jobs $(PT_JOBS) $(PT_ARGS)

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

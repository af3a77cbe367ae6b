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

# Table 20 (uni-modal m1, m2 and multi-modal on alpha, beta, gamma) and Table 21, over $(SEEDS)
table20:
	rm -rf $(T20) && mkdir -p $(T20)
	set -e; for s in $(SEEDS); do for d in synth-alpha synth-beta synth-gamma; do \
	  echo "table20: $$d seed $$s (log: $(T20)/log.txt)" >&2; \
	  $(MMTOOL) prep $$d data.seed=$$s > /dev/null 2>> $(T20)/log.txt; \
	  $(MMTOOL) pretrain-unimodal -r recipes/table20/unimodal.yaml data.name=$$d data.seed=$$s train.seed=$$s \
	    --run-dir $(T20)/$$d/seed$$s/unimodal > /dev/null 2>> $(T20)/log.txt; \
	  $(MMTOOL) train naive -r recipes/table20/multimodal.yaml data.name=$$d data.seed=$$s train.seed=$$s \
	    --run-dir $(T20)/$$d/seed$$s/multimodal > /dev/null 2>> $(T20)/log.txt; \
	done; done
	$(PYTHON) -m mmtool.analysis.table20 $(T20) results/table20.md

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
	$(PYTHON) benchmarks/bench_loop.py
	$(PYTHON) benchmarks/bench_synthetic.py
	$(PYTHON) benchmarks/bench_resnet.py

clean:
	rm -rf runs data .pytest_cache

# lowpower: make setup | make demo | make test   (see README.md)
PYTHON ?= python3
VENV := .venv
PY := $(abspath $(VENV))/bin/python
STAMP := $(VENV)/.installed-requirements
# pip installs with --no-compile (2.5 minutes saved); bytecode is then written on first import, and
# only for what is imported, which a PYTHONDONTWRITEBYTECODE inherited from the shell would forbid,
# making every later command recompile torch (about 5 s each).
unexport PYTHONDONTWRITEBYTECODE
DEMO := runs/demo

.PHONY: setup demo test test-fast clean-demo help zoo study fixed-point

help:
	@echo "make setup   create .venv with the pinned requirements (torch $(shell sed -n 's/^torch==//p' requirements.txt), ...)"
	@echo "make demo    synthetic data -> train on the CPU -> test -> package -> score -> pre-submission check"
	@echo "make test    the whole test suite (what CI runs)"
	@echo "make test-fast  the tests not marked slow (no torchrun, run.pbs or full-package checks)"
	@echo "make zoo     train the zoo's networks with one recipe, int8 each, measure packages (docs/model_zoo.md)"
	@echo "make study   the training-trick study: configs/synthetic/recipe/*.yaml, 3 seeds each, one table"
	@echo "make fixed-point  the fixed-point study: 3 schemes x 4 bit pairs, each trained 12 epochs from the demo network"

setup: $(STAMP)

# The project itself goes in editable, so the `lowpower` command runs this checkout (no build isolation:
# setuptools is already pinned in requirements.txt, and nothing more is downloaded).
$(STAMP): requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --no-compile -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-compile --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The demo ships int8 (post-training quantization for this CPU's x86 engine; a Jetson entry would use
# --engine qnnpack) in batches of 16: together about half the previous fp32 demo's printed time at the
# same Dice on this CPU (docs/results.md, "The demo").
# It packages with --no-verify: the two steps after it run the package as the referee does
# (evaluate.bash) and check it (presubmit), which is what the packager's own verification does.
# --force: the demo owns runs/demo/int8.pt and solution.pyz, so a second `make demo` replaces them.
demo: setup
	$(PY) train.py --cfg configs/synthetic/demo.yaml --out $(DEMO) --resume auto
	$(PY) test.py --checkpoint $(DEMO)/best.pt --save-images $(DEMO)/val_panels --json $(DEMO)/val.json
	$(PY) -m lowpower quantize ptq $(DEMO)/best.pt --engine x86 --out $(DEMO)/int8.pt --force
	./compress.sh $(DEMO)/int8.pt -o $(DEMO)/solution.pyz --batch-size 16 --no-verify --force
	rm -rf evaluation/test && mkdir -p evaluation/test && cp -r data/synthetic/test/IMG data/synthetic/test/GT evaluation/test/
	PYTHON=$(PY) evaluation/evaluate.bash $(DEMO)/solution.pyz; test $$? -eq 0
	$(PY) -m lowpower presubmit $(DEMO)/solution.pyz
	$(PY) -m lowpower demo $(DEMO)

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

# The zoo measured as a team would choose (docs/model_zoo.md): one shared recipe, every network trained,
# converted to int8 (a refusal is kept as its reason), every package run on the synthetic test split in turns.
# Reruns continue: a finished run resumes to its end at once, an existing int8.pt is kept.
ZOO := pidnet_s ddrnet23_slim ppliteseg_t topformer_t bisenetv2 lraspp_mbv3_small fanet_r18_sample unet
ZOO_DIR := runs/zoo
zoo: setup
	for arch in $(ZOO); do \
	  kwargs='{}'; [ $$arch = unet ] && kwargs='{base_width: 16, depth: 4}'; \
	  $(PY) train.py --cfg configs/synthetic/zoo.yaml --out $(ZOO_DIR)/$$arch --resume auto --no-progress \
	    --set model.arch=$$arch "model.kwargs=$$kwargs" || exit 1; \
	  [ -f $(ZOO_DIR)/$$arch/int8.pt ] || $(PY) -m lowpower quantize ptq $(ZOO_DIR)/$$arch/best.pt \
	    --out $(ZOO_DIR)/$$arch/int8.pt --no-progress 2> $(ZOO_DIR)/$$arch/int8_refused.txt \
	    && rm -f $(ZOO_DIR)/$$arch/int8_refused.txt; \
	done
	$(PY) -m lowpower bench pareto $$(for a in $(ZOO); do echo $(ZOO_DIR)/$$a/best.pt; \
	    [ -f $(ZOO_DIR)/$$a/int8.pt ] && echo $(ZOO_DIR)/$$a/int8.pt; done) \
	  --images data/synthetic/test --out $(ZOO_DIR)/pareto -n 3 --force
	$(PY) -m lowpower bench zoo $(ZOO_DIR) --md $(ZOO_DIR)/table.md --force

clean-demo:
	rm -rf $(DEMO) evaluation/test evaluation/output

# The training-trick study (README, "Training tricks, measured"): every arm of configs/synthetic/recipe/
# with seeds 0-2, then one table of val mean Dice, paired differences to the baseline and s/epoch.
# Reruns continue: a finished run resumes to its end at once.
STUDY_ARMS := baseline ema ohem focal photometric all
STUDY_DIR := runs/recipe
study: setup
	for seed in 0 1 2; do for arm in $(STUDY_ARMS); do \
	  $(PY) train.py --cfg configs/synthetic/recipe/$$arm.yaml --out $(STUDY_DIR)/$$arm/seed$$seed --resume auto \
	    --no-progress --set train.seed=$$seed || exit 1; \
	done; done
	$(PY) -m lowpower bench recipes $(STUDY_DIR) --order $$(echo $(STUDY_ARMS) | tr ' ' ',') --md $(STUDY_DIR)/table.md --force

# The fixed-point study (README, "Fixed point, measured"): the demo network (trained first if missing), then
# every scheme at w4/a6, w4/a8, w6/a6, w8/a8, each trained 12 epochs with the quantizer in place by train.py,
# fp32 trained as long; lsq with 8-bit edges, paper with float edges (as its authors), range as is, and lsq
# without edges at w4/a6. One study.csv / study.md / study.png in runs/fixed_point. Reruns continue.
FP_STUDY := $(PY) -m lowpower quantize study $(DEMO)/best.pt --qat-epochs 12 --out runs/fixed_point --no-progress
FP_PAIRS := --pairs 4/6,4/8,6/6,8/8
fixed-point: setup
	$(PY) train.py --cfg configs/synthetic/demo.yaml --out $(DEMO) --resume auto --no-progress
	$(FP_STUDY) --scheme lsq --edge-bits 8 $(FP_PAIRS)
	$(FP_STUDY) --scheme paper --edge-bits 32 $(FP_PAIRS)
	$(FP_STUDY) --scheme range $(FP_PAIRS)
	$(FP_STUDY) --scheme lsq --pairs 4/6

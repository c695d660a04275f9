# robeval: `make demo` (train + evaluate on the bundled MNIST subset) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
DEMO   := results/demo
# adv-lib (ddn, fmn, alma, apgd) goes in without its dependencies: its visdom pin does not
# build on current setuptools, and its real needs (torch, torchvision, tqdm) are ours.
ADVLIB := adv-lib==0.2.8

.PHONY: demo test bench reproduce install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) -e .
	$(PIP) --no-deps $(ADVLIB)
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) -e '.[dev]'
	$(PIP) --no-deps $(ADVLIB)
	touch $@ $(VENV)/.installed

# torchattacks 3.5.1 ships a copy of an old robustbench package that overwrites robustbench
# 1.1.1's files (and pins requests~=2.25.1): put robustbench's own files back after it.
$(VENV)/.installed-peers: pyproject.toml | $(PY)
	$(PIP) -e '.[dev,peers]'
	$(PIP) --no-deps $(ADVLIB)
	$(PIP) --no-deps --force-reinstall robustbench==1.1.1
	touch $@ $(VENV)/.installed-dev $(VENV)/.installed

install: $(VENV)/.installed

$(DEMO)/mnist_cnn.pt: | $(VENV)/.installed
	$(VENV)/bin/robeval train --dataset mnist-mini --arch mnist-cnn --epochs 8 --batch-size 64 \
		--lr 1e-3 --seed 0 --out $@

demo: $(VENV)/.installed $(DEMO)/mnist_cnn.pt
	$(VENV)/bin/robeval run $(DEMO)/mnist_cnn.pt --attack fgsm --attack pgd --attack deepfool:norm=linf \
		--eps 0,0.05,0.1,0.15,0.2,0.3,unbounded --n 500 --seed 0 --out $(DEMO)

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

bench: $(VENV)/.installed-peers
	$(PY) benchmarks/pgd_vs_peers.py
	$(PY) benchmarks/curve_vs_peers.py
	$(PY) benchmarks/regularizer_cost.py
	$(PY) benchmarks/autoattack_curve.py
	$(PY) benchmarks/paper_checks.py
	$(PY) benchmarks/best_iterate.py
	$(PY) benchmarks/indicators_smooth_kernels.py
	$(PY) benchmarks/worst_case.py
	$(PY) benchmarks/attack_optimality.py

# One script per paper (issue 14): results/papers/<paper>.md side by side with the published
# numbers, plus figures; each at most 10 minutes on 2 cores (--scale cpu, the default).
PAPERS := smooth_kernels absum structured_gradient_regularization local_response_differences gradient_norm
reproduce: $(VENV)/.installed-dev
	@set -e; for paper in $(PAPERS); do $(PY) benchmarks/papers/$$paper.py $(REPRODUCE_ARGS); done

clean:
	rm -rf $(VENV) results/demo results/run

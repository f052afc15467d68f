# Two entry points, each self-contained on a fresh machine with Python 3.11
# (and optionally a CUDA toolkit): they create .venv, install torch and the
# package with its test extras, then run.
#   make demo   verify the kernels against PyTorch and time them on this machine
#   make test   lint, the test suite (incl. CUDA kernels run on the CPU and Triton
#               kernels in Triton's interpreter), the op and model tests again on a
#               CPU-only build (the CPU-only wheel, installed away from the source
#               tree and smoke-tested), the CUDA resource check when the CUDA kernels
#               were built, and the Triton kernels compiled for sm_80/sm_90

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION := 2.14.1
# The test build compiles for two real targets to keep CI quick; a plain
# `pip install` builds the full default list (see setup.py).
TEST_CUDA_ARCH_LIST ?= 8.0;9.0
# pytest-xdist workers for the suite (`auto`: one per core; 0 runs it in one process).
TEST_WORKERS ?= auto
SOURCES := setup.py pyproject.toml $(shell find csrc -type f)

.PHONY: demo test install lint clean

$(VENV)/.torch-installed:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION) numpy ninja setuptools wheel
	touch $@

# Rebuilt only when a source or build file changed.
$(VENV)/.package-installed: $(VENV)/.torch-installed $(SOURCES)
	TORCH_CUDA_ARCH_LIST="$${TORCH_CUDA_ARCH_LIST:-$(TEST_CUDA_ARCH_LIST)}" \
		$(PY) -m pip install --quiet --no-build-isolation -e ".[test]"
	touch $@

install: $(VENV)/.package-installed

lint: install
	$(PY) -m ruff check .

test: install lint
	$(PY) -m pytest tests -q -n $(TEST_WORKERS) --dist loadgroup
	$(PY) scripts/wheel_check.py
	$(PY) scripts/resource_report.py --check
	$(PY) scripts/efficiency_report.py --check
	env -u TRITON_INTERPRET $(PY) scripts/triton_aot_report.py --check

demo: install
	$(PY) -m alexnet_kernels.bench

clean:
	rm -rf build .emu-build alexnet_kernels/_C*.so alexnet_kernels/_C.torch_version *.egg-info $(VENV)

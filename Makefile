# The README's two commands are `make demo` and `make test`; both install what they need first.
PY := .venv/bin/python
PYTEST := .venv/bin/pytest

.PHONY: setup setup-py lint test unit kernel cluster demo bench e2e

# Everything (as root): Debian packages, the venv, the Go-built Kubernetes tools and the lab's images.
setup:
	bash .ci/setup

# The venv only (any user; the libnftables packages must be there): enough for unit and lint.
setup-py:
	bash .ci/setup-py

lint: setup-py
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy --strict
	.venv/bin/lint-imports

# All tiers run; a tier that cannot start fails (its conftest says why), it never skips.
test: setup
	$(PYTEST) tests/unit tests/kernel tests/cluster

unit: setup-py
	$(PYTEST) tests/unit

# Root; the full setup, as tests/kernel/test_images.py runs containerd on the lab's images.
kernel: setup
	$(PYTEST) tests/kernel

cluster: setup
	$(PYTEST) tests/cluster

demo: setup
	$(PY) -m tests.cluster.demo

# The upstream NetworkPolicy e2e specs against Stockade helm-installed in a lab (setup builds its
# image); JUnit in tests/e2e-results/.
# `make e2e E2E_ARGS=--quick` runs a representative subset (tests/cluster/README.md).
E2E_ARGS ?=
e2e: setup
	bash tests/tools/build.sh e2e.test agnhost >/dev/null
	bash tests/images/build.sh agnhost >/dev/null
	$(PY) -m tests.cluster.e2e $(E2E_ARGS)

bench: setup
	$(PY) tests/bench/compile.py
	$(PY) tests/bench/cni.py
	$(PY) tests/bench/agent.py

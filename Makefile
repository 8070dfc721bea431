# Two commands on a fresh machine:
#   make up     optimize the model and deploy the stack (default STACK=local: the embedded cluster of
#               local-cluster/, built and started here; STACK=dev for kind, STACK=prod for EKS)
#   make test   install what the tests need and run the whole suite
# Also: make down (stop the embedded cluster), make destroy, make preview, make e2e (the real Pulumi
# engine against the embedded cluster), make lint, make examples, make lock, make lock-check.

STACK ?= local
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
POLICY_VENV := policy/.venv
ACTIONLINT := $(VENV)/bin/actionlint
POLICY_STAMP := $(POLICY_VENV)/.installed

# Locks (every package pinned, with hashes) are installed as they are: --no-deps, hashes required.
PIP_INSTALL_LOCK := -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r

.PHONY: up preview destroy down test e2e lint examples lock lock-check wheelhouse base-image system-deps policy-venv clean

policy-venv: $(POLICY_STAMP)

$(STAMP): requirements.txt requirements-fixtures.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) $(PIP_INSTALL_LOCK) requirements.txt
	$(PY) $(PIP_INSTALL_LOCK) requirements-fixtures.txt
	touch $(STAMP)

# checkov (offline Kubernetes policy checks in the tests) lives in its own venv.
$(CHECKOV_STAMP): requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python $(PIP_INSTALL_LOCK) requirements-checkov.txt
	touch $(CHECKOV_STAMP)

# The CrossGuard policy pack (policy/) runs in a virtualenv of its own: pulumi-policy pins a protobuf
# the pipeline's onnx cannot share.
$(POLICY_STAMP): policy/requirements.txt
	test -x $(POLICY_VENV)/bin/python || $(PYTHON) -m venv $(POLICY_VENV)
	$(POLICY_VENV)/bin/python $(PIP_INSTALL_LOCK) policy/requirements.txt
	touch $(POLICY_STAMP)

# actionlint (the workflow lint in tests/ci/) from its Go module: its PyPI wrapper downloads a release.
$(ACTIONLINT): $(STAMP) tools/modules/actionlint/go.mod tools/modules/actionlint/go.sum
	cd tools/modules/actionlint && GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0 \
		go build -trimpath -o $(CURDIR)/$(ACTIONLINT) github.com/rhysd/actionlint/cmd/actionlint

# Debian packages the tests use; installs only what is missing (root or sudo).
system-deps:
	scripts/install-system-deps.sh

# Re-resolve requirements*.in into the locks (scripts/lock.py says how to take newer releases).
lock: $(STAMP)
	$(PY) scripts/lock.py

# Whether each lock is still byte for byte what the package index resolves today: not a test (the
# index moves on its own); .github/workflows/locks.yml runs `make lock` weekly and opens a pull request.
lock-check: $(STAMP)
	$(PY) scripts/lock.py --check

# What the serving image's offline builds install (the local stack, the container test), and its base
# image (debootstrap): made here, before any test, because a test never reaches a package index.
wheelhouse: $(STAMP)
	$(PY) scripts/wheelhouse.py >/dev/null

base-image: system-deps
	scripts/start-dockerd.sh >/dev/null
	scripts/base-image.sh >/dev/null

examples: $(STAMP)
	$(PY) -m examples.digits.train --out examples/digits/build
	$(PY) -m examples.text.train --out examples/text/build

# The local stack's image builds offline: its wheels and base image come first.
LOCAL_INPUTS := $(if $(filter local,$(STACK)),wheelhouse base-image)

up: system-deps examples $(POLICY_STAMP) $(LOCAL_INPUTS)
	scripts/up.sh up $(STACK) $(ARGS)

preview: system-deps examples $(POLICY_STAMP) $(LOCAL_INPUTS)
	scripts/up.sh preview $(STACK) $(ARGS)

destroy: $(STAMP)
	scripts/up.sh destroy $(STACK) $(ARGS)

down:
	local-cluster/cluster.sh down

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/python scripts/ci/workflow_rules.py .github/workflows/*.yml

test: system-deps $(STAMP) $(CHECKOV_STAMP) $(POLICY_STAMP) $(ACTIONLINT) wheelhouse base-image
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# preview/up/destroy of a throwaway stack under the real Pulumi CLI and plugins, against the
# local cluster (local-cluster/): tools/build.sh builds them from Go modules the first time.
e2e: system-deps examples $(POLICY_STAMP) wheelhouse base-image
	tools/build.sh >/dev/null
	$(VENV)/bin/pytest e2e $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(POLICY_VENV) examples/*/build .cache .pytest_cache .mypy_cache .ruff_cache

# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# faiss-cpu by default; `make FAISS=gpu ...` installs faiss-gpu instead (same `faiss` module).
FAISS  ?= cpu

.PHONY: demo test install kafka-jars browser constraints clean

# pyproject.toml says which versions work; constraints.txt pins the exact set CI tests.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[$(FAISS),test]"
	touch $(STAMP)

install: $(STAMP)

kafka-jars: $(STAMP)
	$(BIN)/streamrec kafka fetch

demo: install kafka-jars
	$(BIN)/streamrec demo

# The dashboard's browser test (tests/integration/test_dashboard.py) drives Debian's headless
# Chromium; it fails under CI without one. Installed here only as root where apt-get exists.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else echo "no chromium, and not root with apt-get: install Debian's chromium for the dashboard test" >&2; fi

# pyproject.toml's testpaths: tests/ and the docstring examples of the packages.
test: install kafka-jars browser
	$(BIN)/python -m pytest

# After changing a range in pyproject.toml and installing: pin what the venv now holds.
constraints: $(STAMP)
	$(BIN)/python .ci/freeze_constraints.py

clean:
	-$(BIN)/streamrec kafka down
	rm -rf $(VENV) .kafka .worker models .demo

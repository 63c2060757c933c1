# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# faiss-cpu by default; `make FAISS=gpu ...` installs faiss-gpu instead (same `faiss` module).
FAISS  ?= cpu

.PHONY: demo test install kafka-jars clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(FAISS),test]"
	touch $(STAMP)

install: $(STAMP)

kafka-jars: $(STAMP)
	$(BIN)/streamrec kafka fetch

demo: install kafka-jars
	$(BIN)/streamrec demo

test: install kafka-jars
	$(BIN)/python -m pytest tests

clean:
	-$(BIN)/streamrec kafka down
	rm -rf $(VENV) .kafka .worker models .demo

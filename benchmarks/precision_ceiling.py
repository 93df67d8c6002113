"""The ceiling of half-precision document encoding on this CPU: every way here of running the model in bf16, on the
passage texts of an index that ``benchmarks.precision`` built (the build's own texts and batch size).

    python -m benchmarks.precision_ceiling WORK/idx/text-auto      # an index built by benchmarks.precision

Ways, each against raw ``SentenceTransformer.encode`` in fp32, interleaved rounds, medians: ``torch.autocast`` around
the whole model, the model's weights cast to bf16 (``model.to(torch.bfloat16)``), the engine's torch backend (a copy
of the model with bf16 Transformer weights, ``document_backend="torch"``) and, where ``openvino`` is importable, the
engine's OpenVINO backend (the model's exported graph compiled with bf16 inference precision, what ``auto`` picks
there; export and compilation outside the timing). Writes ``results/precision_ceiling.{json,md}``.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import time
from importlib import util
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks import common


def passage_texts(index: Path) -> list[str]:
    """The texts a build encoded for each passage of ``index`` (title, a space, the passage), in passage order."""
    from indexing.manifest import read_manifest

    connection = sqlite3.connect(index / read_manifest(index).files["docstore"])
    documents = {doc_id: (title, text) for doc_id, title, text in connection.execute("SELECT doc_id, title, text FROM documents")}
    texts = []
    for doc_id, start, end in connection.execute("SELECT doc_id, start, end FROM passages ORDER BY pid"):
        title, text = documents[doc_id]
        texts.append(f"{title} {text[start:end]}".strip() if title else text[start:end])
    connection.close()
    return texts


def ways(model_path: str, texts: list[str], batch_size: int) -> dict[str, Callable[[], np.ndarray]]:
    """Each way of encoding ``texts``: a call returning ``(n, d)`` float32 normalized vectors."""
    import torch
    from sentence_transformers import SentenceTransformer

    from retriever.encoders.base import load_encoder

    fp32 = SentenceTransformer(model_path, device="cpu")
    bf16 = SentenceTransformer(model_path, device="cpu").to(torch.bfloat16)
    engine_torch = load_encoder(model_path, device="cpu", precision="bf16", document_backend="torch")

    def autocast_whole() -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fp32.encode(texts, batch_size=batch_size, normalize_embeddings=True)

    calls = {
        "raw_fp32": lambda: fp32.encode(texts, batch_size=batch_size, normalize_embeddings=True),
        "autocast_whole_model": autocast_whole,
        "bf16_weights": lambda: bf16.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                            convert_to_tensor=True).float().numpy(),
        "engine_torch_bf16": lambda: engine_torch.encode_documents(texts, batch_size=batch_size),
    }
    if util.find_spec("openvino") is not None:
        engine_openvino = load_encoder(model_path, device="cpu", precision="bf16", document_backend="openvino")
        engine_openvino.encode_documents(texts[:2])  # export and compile outside the timing (2-3 s for MiniLM-L6)
        calls["engine_openvino_bf16"] = lambda: engine_openvino.encode_documents(texts, batch_size=batch_size)
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=Path, help="An index built by benchmarks.precision (its passages are encoded).")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from retriever.models.resolve import resolve_model

    texts = passage_texts(args.index)
    calls = ways(resolve_model(args.model).path, texts, args.batch_size)
    rates: dict[str, list[float]] = {name: [] for name in calls}
    vectors: dict[str, np.ndarray] = {}
    for number in range(args.rounds):
        for name in (list(calls) if number % 2 == 0 else list(reversed(calls))):
            started = time.perf_counter()
            vectors[name] = np.asarray(calls[name](), dtype=np.float32)
            rates[name].append(len(texts) / (time.perf_counter() - started))
    base = statistics.median(rates["raw_fp32"])
    data: dict[str, Any] = {"passages": len(texts), "batch_size": args.batch_size, "rounds": args.rounds, "ways": {
        name: {"passages_per_s": statistics.median(rates[name]), "ratio_vs_raw_fp32": statistics.median(rates[name]) / base,
               "min_cosine_vs_fp32": float((vectors[name] * vectors["raw_fp32"]).sum(axis=1).min())} for name in calls}}
    lines = ["# The ceiling of bf16 document encoding on this CPU", "",
             f"{len(texts):,} passage texts of a SciFact build (`benchmarks.precision`), batch size {args.batch_size}, "
             f"medians of {args.rounds} interleaved rounds, one process.", "",
             "| way | passages/s | vs raw fp32 | min cosine to fp32 |", "|---|---|---|---|"]
    lines += [f"| {name} | {row['passages_per_s']:.1f} | {row['ratio_vs_raw_fp32']:.2f}x | {row['min_cosine_vs_fp32']:.5f} |"
              for name, row in data["ways"].items()]
    path = common.write_results("precision_ceiling", data, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

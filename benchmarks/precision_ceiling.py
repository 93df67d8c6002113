"""The ceiling of half-precision document encoding on this CPU: every way here of running the model in bf16, on the
passage texts of an index that ``benchmarks.precision`` built (the build's own texts and batch size).

    python -m benchmarks.precision_ceiling WORK/idx/text-auto      # an index built by benchmarks.precision

Ways, each against raw ``SentenceTransformer.encode`` in fp32, interleaved rounds, medians: ``torch.autocast`` around
the whole model, the model's weights cast to bf16 (``model.to(torch.bfloat16)``), the engine's encoder as a build
loads it (``precision="auto"``: a copy of the model with bf16 transformer weights), and, where ``openvino`` is
importable, the Transformer compiled by OpenVINO with bf16 inference precision. Writes
``results/precision_ceiling.{json,md}``.
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
    engine = load_encoder(model_path, device="cpu", precision="auto")

    def autocast_whole() -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fp32.encode(texts, batch_size=batch_size, normalize_embeddings=True)

    calls = {
        "raw_fp32": lambda: fp32.encode(texts, batch_size=batch_size, normalize_embeddings=True),
        "autocast_whole_model": autocast_whole,
        "bf16_weights": lambda: bf16.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                            convert_to_tensor=True).float().numpy(),
        "engine_auto": lambda: engine.encode_documents(texts, batch_size=batch_size),
    }
    if util.find_spec("openvino") is not None:
        calls["openvino_bf16"] = openvino_way(fp32, texts, batch_size)
    return calls


def openvino_way(model: Any, texts: list[str], batch_size: int) -> Callable[[], np.ndarray]:
    """The model's Transformer converted to OpenVINO (``ov.convert_model`` of the torch module, dynamic batch and
    length) and compiled for the CPU with bf16 inference precision; tokenizing, length-sorted batches, mean pooling
    and normalization as sentence-transformers does them, in numpy fp32. Conversion and compilation happen here,
    outside the timing (2-3 s for MiniLM-L6)."""
    import openvino as ov
    import torch

    tokenizer, max_length = model.tokenizer, model.max_seq_length
    transformer = model[0].auto_model.eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = transformer

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    names = ("input_ids", "attention_mask", "token_type_ids")
    example = tokenizer(["an example", "another example"], padding=True, return_tensors="pt")
    converted = ov.convert_model(LastHiddenState(), example_input=tuple(example[n] for n in names),
                                 input=[(n, [-1, -1], ov.Type.i64) for n in names])
    compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})

    def encode() -> np.ndarray:
        order = np.argsort([-len(text) for text in texts], kind="stable")
        out = np.zeros((len(texts), model.get_sentence_embedding_dimension()), dtype=np.float32)
        request = compiled.create_infer_request()
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                              return_tensors="np")
            hidden = np.asarray(request.infer({n: batch[n] for n in names})[0], dtype=np.float32)
            mask = batch["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / mask.sum(axis=1)
            out[rows] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out

    return encode


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

"""Document embeddings read back from an index built with the base model (``--query-only`` training).

A query-only run keeps the base model's document embeddings; when the ``--negatives-from`` index holds exactly
those (same model, preset, prefix and truncation, one vector per document, an exact index), they are read back
instead of being computed again: every key the run sees and the evaluation corpus are then free.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from training.export import BaseModel

log = logging.getLogger(__name__)

EXACT_FACTORIES = ("Flat",)
"""Index types whose stored vectors are the encoder's output as it was (no quantization)."""


def base_document_vectors(index: str | Path, base: BaseModel, *, max_tokens: int) -> tuple[list[str], np.ndarray] | None:
    """The texts ``document_prefix + full_text`` of the index's documents and their stored vectors ``(n, d)``
    float32, or None (with the reason logged) when the index's vectors are not what ``base`` would compute at
    ``max_tokens``: another model, preset or prefix, another truncation, chunked documents or a lossy index.
    """
    from indexing.documents import Document
    from indexing.errors import ModelError
    from indexing.index_dir import open_index
    from retriever.models.resolve import resolve_model

    opened = open_index(Path(index))
    try:
        manifest = opened.manifest
        encoder = manifest.encoder
        reason = None
        try:
            recorded = resolve_model(encoder.get("path") or encoder["model"]).path
        except ModelError as exc:  # a model that does not resolve here is not the base
            recorded = f"unresolvable ({exc})"
        if recorded != base.path:
            reason = f"built with {encoder.get('model')!r}, not the base {base.name!r}"
        elif encoder.get("preset") != base.preset or encoder.get("document_prefix", "") != base.document_prefix:
            reason = "built with another preset or document prefix"
        elif encoder.get("preprocessor"):
            reason = f"its documents were preprocessed ({encoder['preprocessor']}) before encoding"
        elif int(encoder.get("max_seq_length", -1)) != max_tokens:
            reason = f"built with {encoder.get('max_seq_length')} tokens per document, training uses --max-tokens {max_tokens}"
        elif manifest.factory not in EXACT_FACTORIES:
            reason = f"a {manifest.factory} index does not store exact vectors"
        elif opened.docstore.count_passages() != opened.docstore.count_documents():
            reason = "its documents are chunked into several passages"
        if reason is not None:
            log.info("document embeddings are computed (not read from %s: %s)", index, reason)
            return None
        rows = opened.docstore.passage_texts(0, 1 << 62)  # (pid, doc_id, title, text) of every passage
        texts = [base.document_prefix + Document(doc_id, title, text).full_text() for _, doc_id, title, text in rows]
        vectors = opened.vectors.reconstruct(np.array([pid for pid, *_ in rows], dtype=np.int64))  # (n, d)
    finally:
        opened.close()
    log.info("read %d base document embeddings from %s", len(texts), index)
    return texts, np.ascontiguousarray(vectors, dtype=np.float32)

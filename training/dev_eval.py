"""Evaluation during training: exact search over a BEIR folder's corpus in memory, scored by ir_measures."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from indexing.errors import CorpusError, RetrieverError
from retriever.hits import Hits
from training.config import EvalConfig

log = logging.getLogger(__name__)

DEPTH = 100
"""Documents retrieved per query (enough for nDCG@10, R@100, MRR@10)."""


class DevSet:
    """A BEIR folder's corpus, the judged queries of one split, and their qrels.

    Args:
        config: the folder, split, selection metric and batch size.
        query_prefix, document_prefix: the model's prefixes.
        preprocess: the output preset's text preprocessing (e.g. identifier splitting for code), applied to
            queries and documents before the prefixes, as an index built with the output model would.

    Raises:
        CorpusError: missing corpus/queries/qrels files. RetrieverError: an unknown metric or no judged query.
    """

    def __init__(self, config: EvalConfig, *, query_prefix: str = "", document_prefix: str = "",
                 preprocess: Callable[[str], str] | None = None):
        from indexing.formats.queries import read_queries
        from indexing.formats.trec import read_qrels
        from indexing.readers import read_corpus
        from retriever.evaluation.metrics import parse_metrics

        if config.dataset is None:
            raise RetrieverError("no evaluation dataset given")
        folder = Path(config.dataset)
        qrels_path = folder / "qrels" / f"{config.split}.tsv"
        if not qrels_path.is_file():
            raise CorpusError(qrels_path, f"no such file (--eval needs a BEIR folder with qrels/{config.split}.tsv)")
        if config.split == "test":
            log.warning("selecting checkpoints on test queries leaks the test set into the model choice")
        self.measure = str(parse_metrics([config.metric])[0])
        self.metrics = list(dict.fromkeys([self.measure, "R@100"]))
        self.qrels = read_qrels(qrels_path)
        queries = read_queries(folder / "queries.jsonl")
        self.query_ids = [q for q in queries if q in self.qrels]
        if not self.query_ids:
            raise RetrieverError(f"{qrels_path}: no judged query has a text in queries.jsonl")
        prepare = preprocess or str  # str(text) is text: no preprocessing
        self.query_texts = [query_prefix + prepare(queries[q]) for q in self.query_ids]
        docs = list(read_corpus([folder]))
        self.doc_ids = [d.id for d in docs]
        self.doc_texts = [document_prefix + prepare(d.full_text()) for d in docs]
        self.batch_size = config.batch_size
        self.name = f"{folder.name}/{config.split}"
        log.info("evaluation on %s: %d queries, %d documents", self.name, len(self.query_ids), len(self.doc_ids))

    @torch.no_grad()
    def encode_documents(self, model) -> torch.Tensor:
        """The corpus embedded by ``model`` (a SentenceTransformer): ``(n_docs, d)`` float32 on the CPU."""
        was_training = model.training
        model.eval()
        try:
            return self._encode(model, self.doc_texts)
        finally:
            model.train(was_training)

    @torch.no_grad()
    def score(self, model, *, documents: torch.Tensor | None = None) -> dict[str, float]:
        """Encode corpus and queries with ``model`` (a SentenceTransformer), search exactly, score.

        ``documents``, when given, are the corpus embeddings to search (from :meth:`encode_documents` of another
        model: an asymmetric model's document side); only the queries are then encoded.
        Returns ``{metric: value}`` with the selection metric first. The model's train/eval mode is restored.
        """
        was_training = model.training
        model.eval()
        try:
            docs = self._encode(model, self.doc_texts) if documents is None else documents  # (n_docs, d)
            queries = self._encode(model, self.query_texts)  # (n_queries, d)
        finally:
            model.train(was_training)
        scores = queries @ docs.T  # (n_queries, n_docs)
        values, indices = torch.topk(scores, k=min(DEPTH, len(self.doc_ids)), dim=1)  # (n_queries, k)
        run = {
            query_id: Hits([self.doc_ids[j] for j in row.tolist()], vals.numpy().astype(np.float32))
            for query_id, row, vals in zip(self.query_ids, indices, values)
        }
        from retriever.evaluation.metrics import evaluate

        return evaluate(run, self.qrels, self.metrics).aggregate

    def _encode(self, model, texts: list[str]) -> torch.Tensor:
        vectors = model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True,
                               normalize_embeddings=True, show_progress_bar=False)
        return vectors.float().cpu()  # (n, d)

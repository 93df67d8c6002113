"""Supervised training pairs: reading them (JSONL or a BEIR train split) and mining hard negatives from an index."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from indexing.errors import CorpusError, RetrieverError
from retriever.hits import Hits
from training.config import NegativesConfig
from training.data import Pair

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabeledPair:
    """A pair as read: texts, optional ids (BEIR), and negatives given in the file.

    Attributes:
        known_positive_ids: every document id judged relevant to the query (skipped when mining).
        teacher_positive: the positive is not given: the hybrid teacher's best document outside
            ``known_positive_ids`` becomes it (``positive`` and ``positive_id`` are then ignored).
    """

    query: str
    positive: str
    query_id: str | None = None
    positive_id: str | None = None
    negatives: tuple[str, ...] = ()
    known_positive_ids: frozenset[str] = field(default_factory=frozenset)
    teacher_positive: bool = False


def read_pairs(path: Path, *, split: str = "train") -> list[LabeledPair]:
    """Pairs from a JSONL file (``query``, ``positive``, optional ``negative``/``negatives`` string or list,
    optional ``query_id``/``positive_id``) or from a BEIR folder (``queries.jsonl`` + ``qrels/<split>.tsv`` +
    ``corpus.jsonl``: one pair per judged relevant document).

    Raises:
        CorpusError: missing files, bad JSON or fields (naming file and line), or no pair at all.
    """
    path = Path(path)
    pairs = _read_beir_pairs(path, split) if path.is_dir() else _read_jsonl_pairs(path)
    if not pairs:
        raise CorpusError(path, "no training pairs")
    return pairs


def _read_jsonl_pairs(path: Path) -> list[LabeledPair]:
    from indexing.formats.jsonl import read_jsonl

    pairs = []
    for number, record in read_jsonl(path):
        texts = {}
        for name in ("query", "positive"):
            value = record.get(name)
            if not isinstance(value, str) or not value.strip():
                raise CorpusError(path, "missing or not a non-empty string", line=number, field=name)
            texts[name] = value
        negatives = record.get("negatives", record.get("negative", []))
        negatives = [negatives] if isinstance(negatives, str) else negatives
        if not isinstance(negatives, list) or not all(isinstance(n, str) for n in negatives):
            raise CorpusError(path, "must be a string or a list of strings", line=number, field="negatives")
        positive_id = record.get("positive_id")
        pairs.append(LabeledPair(
            texts["query"], texts["positive"],
            query_id=_optional_id(record.get("query_id")), positive_id=_optional_id(positive_id),
            negatives=tuple(negatives),
            known_positive_ids=frozenset([str(positive_id)]) if positive_id is not None else frozenset(),
        ))
    return pairs


def _optional_id(value: object) -> str | None:
    return None if value is None else str(value)


def _read_beir_pairs(folder: Path, split: str) -> list[LabeledPair]:
    from indexing.formats.queries import read_queries
    from indexing.formats.trec import read_qrels
    from indexing.readers import read_corpus

    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise CorpusError(qrels_path, f"no such file (a BEIR folder needs qrels/{split}.tsv to train on)")
    queries = read_queries(folder / "queries.jsonl")
    qrels = {q: {d for d, rel in docs.items() if rel > 0} for q, docs in read_qrels(qrels_path).items()}
    wanted = {d for docs in qrels.values() for d in docs}
    texts = {doc.id: doc.full_text() for doc in read_corpus([folder]) if doc.id in wanted}
    pairs, missing = [], 0
    for query_id, relevant in qrels.items():
        if query_id not in queries:
            missing += 1
            continue
        for doc_id in sorted(relevant):
            if doc_id not in texts:
                missing += 1
                continue
            pairs.append(LabeledPair(queries[query_id], texts[doc_id], query_id=query_id, positive_id=doc_id,
                                     known_positive_ids=frozenset(relevant)))
    if missing:
        log.warning("%d judgments refer to queries or documents that are not in %s; skipped", missing, folder)
    return pairs


def mine_negatives(
    pairs: Sequence[LabeledPair], negatives: NegativesConfig, *, device: str = "cpu"
) -> tuple[list[Pair], list[dict]]:
    """Give every pair a pool of hard negatives: the hits ranked ``rank_min..rank_max`` by the index's own
    encoder for its query, without any known positive (by id, or by text when the pair has no ids).

    Without an index the pool is the pair's given negatives. Returns the pairs and a JSON-able record of the
    mined ids per query.
    """
    if negatives.index is None:
        return [Pair(p.query, p.positive, p.negatives) for p in pairs], []
    if negatives.teacher == "hybrid":
        return _mine_with_hybrid_teacher(pairs, negatives, device=device)
    from retriever.search.searcher import Searcher

    searcher = Searcher.load(negatives.index, device=device)
    queries = list(dict.fromkeys(p.query for p in pairs))
    hits = searcher.retrieve(queries, k=negatives.rank_max)
    ranked = {query: h.ids[negatives.rank_min - 1 :] for query, h in zip(queries, hits)}
    candidate_ids = sorted({doc_id for ids in ranked.values() for doc_id in ids})
    documents = searcher.opened.docstore.documents(candidate_ids)
    doc_text = {doc_id: doc.full_text() for doc_id, doc in documents.items()}
    skip_ids: dict[str, set[str]] = {}
    skip_texts: dict[str, set[str]] = {}
    for pair in pairs:
        skip_ids.setdefault(pair.query, set()).update(pair.known_positive_ids)
        skip_texts.setdefault(pair.query, set()).add(_norm(pair.positive))
    mined: dict[str, list[str]] = {}
    skipped = 0
    for query, ids in ranked.items():
        keep = []
        for doc_id in ids:
            if doc_id not in doc_text:
                continue
            if doc_id in skip_ids[query] or _norm(doc_text[doc_id]) in skip_texts[query]:
                skipped += 1
                continue
            keep.append(doc_id)
        mined[query] = keep
    log.info("mined negatives for %d queries from %s (%d known positives skipped)", len(mined), negatives.index, skipped)
    out = [Pair(p.query, p.positive, tuple(p.negatives) + tuple(doc_text[d] for d in mined[p.query])) for p in pairs]
    record = [{"query": q, "negative_ids": ids} for q, ids in mined.items()]
    return out, record


def _mine_with_hybrid_teacher(
    pairs: Sequence[LabeledPair], negatives: NegativesConfig, *, device: str
) -> tuple[list[Pair], list[dict]]:
    """Negatives and soft labels from BM25 + dense score fusion (the index's encoder, its BM25 index, default
    alpha; or with ``teacher_indexes``, see :func:`_teacher_fusion`): the fused ranks ``rank_min..rank_max`` without known positives are the pool, and the fused scores of
    the positive and of each pool document are the teacher's scores.

    A pair needs a positive id that the fusion ranks within ``rank_max`` (the teacher must vouch for its own
    positive); the others are dropped and counted in the log.
    """
    from retriever.search.hybrid import HybridSearcher

    searcher = HybridSearcher.load(negatives.index, device=device)
    try:
        queries = list(dict.fromkeys(p.query for p in pairs))
        runs = _teacher_fusion(searcher, queries, negatives, device=device)
        fused = {query: dict(zip(h.ids, h.scores.tolist())) for query, h in zip(queries, runs)}
        ranked = {query: list(scores)[negatives.rank_min - 1 :] for query, scores in fused.items()}
        wanted = {d for ids in ranked.values() for d in ids}
        wanted |= {d for pair in pairs if pair.teacher_positive for d in fused[pair.query]}
        documents = searcher.searcher.opened.docstore.documents(sorted(wanted))
    finally:
        searcher.close()
    doc_text = {doc_id: doc.full_text() for doc_id, doc in documents.items()}
    out: list[Pair] = []
    record: list[dict] = []
    unvouched = 0
    for pair in pairs:
        scores = fused[pair.query]
        if pair.teacher_positive:  # the teacher's best other document is the positive, the rest of its list the pool
            ranking = [d for d in scores if d in doc_text and d not in pair.known_positive_ids]
            if len(ranking) < 2:
                unvouched += 1
                continue
            positive_id, pool = ranking[0], ranking[1:]
            positive = doc_text[positive_id]
        elif pair.positive_id is None or pair.positive_id not in scores:
            unvouched += 1
            continue
        else:
            positive_id, positive = pair.positive_id, pair.positive
            skip = pair.known_positive_ids | {pair.positive_id}
            pool = [d for d in ranked[pair.query] if d in doc_text and d not in skip]
        teacher = (scores[positive_id], *(scores[d] for d in pool))
        out.append(Pair(pair.query, positive, tuple(doc_text[d] for d in pool), teacher_scores=teacher))
        record.append({"query": pair.query, "negative_ids": pool, "teacher_scores": [round(s, 6) for s in teacher],
                       **({"positive_id": positive_id} if pair.teacher_positive else {})})
    log.info("hybrid teacher: %d pairs with soft labels from %s; %d dropped (positive not in the fused top %d)",
             len(out), negatives.index, unvouched, negatives.rank_max)
    if not out:
        if all(pair.positive_id is None for pair in pairs):
            raise RetrieverError("--teacher hybrid needs pairs with a positive_id (the teacher scores indexed documents)")
        raise RetrieverError(f"--teacher hybrid: the fusion ranks no pair's positive within its top {negatives.rank_max}")
    return out, record


def _teacher_fusion(searcher: Any, queries: list[str], negatives: NegativesConfig, *, device: str) -> list[Hits]:
    """Each query's top ``rank_max`` by :func:`~retriever.search.fusion.weighted_score_fusion` of the index's dense list,
    the list of every ``teacher_indexes`` index, and the BM25 list (each its top :data:`DEFAULT_DEPTH`), weighted
    by ``teacher_weights``; without teacher indexes, the hybrid's default ``(alpha, 1 - alpha)``.

    Raises:
        RetrieverError: a teacher index cannot be opened, or holds documents the main index does not.
    """
    from retriever.search.fusion import weighted_score_fusion
    from retriever.search.hybrid import DEFAULT_ALPHA, DEFAULT_DEPTH
    from retriever.search.searcher import Searcher

    depth = max(DEFAULT_DEPTH, negatives.rank_max)
    dense, sparse = searcher.candidates(queries, depth)
    extra: list[list[Hits]] = []
    for path in negatives.teacher_indexes:
        teacher = Searcher.load(path, device=device)
        try:
            hits = teacher.retrieve(queries, depth)
        finally:
            teacher.close()
        ids = {d for h in hits for d in h.ids}
        missing = ids - searcher.searcher.opened.docstore.existing(sorted(ids))
        if missing:
            raise RetrieverError(f"--teacher-index {path}: {len(missing)} documents not in {negatives.index} "
                                 f"(e.g. {sorted(missing)[0]!r}); build both indexes from the same corpus")
        extra.append(hits)
    weights = negatives.teacher_weights or (DEFAULT_ALPHA, 1.0 - DEFAULT_ALPHA)
    out = []
    for i in range(len(queries)):
        fused = weighted_score_fusion([dense[i], *(hits[i] for hits in extra), sparse[i]], weights)
        out.append(Hits(fused.ids[: negatives.rank_max], fused.scores[: negatives.rank_max]))
    return out


def untitled_negatives(pairs: Sequence[Pair], mined: Sequence[dict], bodies: dict[str, str]) -> list[Pair]:
    """``pairs`` whose mined negatives are replaced, in order, by those documents' ``bodies`` (text without title).

    ``mined`` is :func:`mine_negatives`' record: ``{"query", "negative_ids"}`` per query, or per pair in the pairs'
    order (then matched by position, so two pairs asking the same text keep their own pools). Teacher scores
    stay aligned: they follow the pool's order. Raises RetrieverError when a pair's negatives are not its mined ones.
    """
    if len(mined) == len(pairs) and all(r["query"] == p.query for r, p in zip(mined, pairs)):
        aligned = list(mined)  # one record per pair (the hybrid teacher's): exact even when query texts repeat
    else:
        by_query = {record["query"]: record for record in mined}
        aligned = [by_query.get(pair.query, {}) for pair in pairs]
    out = []
    for pair, record in zip(pairs, aligned):
        ids = record.get("negative_ids", [])
        if len(ids) != len(pair.negatives):
            raise RetrieverError(f"query {pair.query[:60]!r}: {len(pair.negatives)} negatives but {len(ids)} mined ids")
        positive = bodies[record["positive_id"]] if "positive_id" in record else pair.positive  # a teacher's pick
        out.append(replace(pair, positive=positive, negatives=tuple(bodies[d] for d in ids)))
    return out


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def check_index(index: str | None) -> None:
    """Fail early on an ``--negatives-from`` that is not an index directory."""
    from indexing.manifest import MANIFEST

    if index is not None and not (Path(index) / MANIFEST).is_file():
        raise RetrieverError(f"--negatives-from {index}: not an index directory (no manifest); build one with `retriever index build`")

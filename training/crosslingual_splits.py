"""The fixed train/evaluation splits of the cross-lingual data, and the training corpus drawn from the train halves.

One module decides what is trained on and what is evaluated, for ``retriever train crosslingual``'s corpus
(:func:`write_training_corpus`) and for ``benchmarks/crosslingual.py`` alike, so nothing evaluated is trained on:

- XQuAD (``xquad/<lang>/``, 48 articles, paragraph ids ``pAA-PP``): articles are ranked by
  ``sha256("xquad:" + article)``; the first 24 are ``train``, the other 24 ``eval``. A question goes with
  its paragraph's article.
- Tatoeba (``tatoeba/<xxx>-eng/``, pair ``i`` = query ``q<i>`` + document ``d<i>``): within each language
  pair, pair ids are ranked by ``sha256("tatoeba:<xxx>:<i>")``; the first half (rounded down) is ``train``.

A hash ranking rather than "first half of the file" keeps the halves free of any ordering in the source
files, and is stable whatever else changes. ``dev`` is a fixed slice *of the train half* (4 XQuAD articles,
a fifth of each Tatoeba pair's train ids) for choosing a recipe: recipe runs train without it
(``exclude_dev``), the final run on the whole train half.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from indexing.errors import CorpusError
from indexing.formats.jsonl import load_jsonl
from indexing.formats.queries import read_queries
from indexing.formats.trec import read_qrels

log = logging.getLogger(__name__)

Half = Literal["train", "eval", "dev"]

XQUAD_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
XQUAD_TRAIN_ARTICLES = 24
XQUAD_DEV_ARTICLES = 4
TATOEBA_DEV_SHARE = 0.2


def _rank(keys: Iterable[str], salt: str) -> list[str]:
    return sorted(set(keys), key=lambda key: hashlib.sha256(f"{salt}:{key}".encode()).hexdigest())


def xquad_article(paragraph_id: str) -> str:
    """``"p07-03"`` -> ``"p07"``."""
    article, sep, _ = paragraph_id.partition("-")
    if not sep:
        raise ValueError(f"not an XQuAD paragraph id: {paragraph_id!r}")
    return article


@dataclass(frozen=True)
class XquadSplit:
    """XQuAD articles of each half. ``dev`` is a subset of ``train``."""

    train: frozenset[str]
    eval: frozenset[str]
    dev: frozenset[str]

    def half_of(self, paragraph_id: str) -> Literal["train", "eval"]:
        return "train" if xquad_article(paragraph_id) in self.train else "eval"


def xquad_split(articles: Iterable[str]) -> XquadSplit:
    """Split article ids 24/24 (ranked by hash), and pick the 4 dev articles among the train ones.

    Raises:
        ValueError: not exactly 48 distinct articles.
    """
    ranked = _rank(articles, "xquad")
    if len(ranked) != 2 * XQUAD_TRAIN_ARTICLES:
        raise ValueError(f"XQuAD has 48 articles, got {len(ranked)}")
    train = ranked[:XQUAD_TRAIN_ARTICLES]
    dev = _rank(train, "xquad-dev")[:XQUAD_DEV_ARTICLES]
    return XquadSplit(frozenset(train), frozenset(ranked[XQUAD_TRAIN_ARTICLES:]), frozenset(dev))


def xquad_split_of(data: Path) -> XquadSplit:
    """The split of ``data/xquad`` (articles read from the English corpus)."""
    corpus = Path(data) / "xquad" / "en" / "corpus.jsonl"
    if not corpus.is_file():
        raise CorpusError(corpus, "no such file (the XQuAD collection is missing)")
    return xquad_split(xquad_article(record["_id"]) for record in load_jsonl(corpus))


def tatoeba_pair_id(record_id: str) -> str:
    """``"q12"`` / ``"d12"`` -> ``"12"``."""
    if record_id[:1] not in ("q", "d") or not record_id[1:].isdigit():
        raise ValueError(f"not a Tatoeba record id: {record_id!r}")
    return record_id[1:]


def tatoeba_split(language: str, pair_ids: Iterable[str]) -> dict[str, Half]:
    """Pair id -> ``train``/``dev``/``eval`` for one language pair (``language`` as in ``rus-eng`` -> ``rus``).

    Half the pairs (rounded down) are train-side; ``dev`` is the first fifth of those by a second ranking.
    """
    ranked = _rank(pair_ids, f"tatoeba:{language}")
    train = ranked[: len(ranked) // 2]
    dev = set(_rank(train, f"tatoeba-dev:{language}")[: int(len(train) * TATOEBA_DEV_SHARE)])
    halves: dict[str, Half] = {pid: "eval" for pid in ranked[len(ranked) // 2 :]}
    halves.update({pid: "dev" if pid in dev else "train" for pid in train})
    return halves


def tatoeba_languages(data: Path) -> list[str]:
    """Every ``xxx`` with a ``tatoeba/xxx-eng`` folder, sorted."""
    return sorted(p.name.removesuffix("-eng") for p in (Path(data) / "tatoeba").glob("*-eng") if (p / "queries.jsonl").is_file())


def write_training_corpus(
    data: Path,
    out: Path,
    *,
    tatoeba: Iterable[str],
    xquad: Iterable[str] = XQUAD_LANGUAGES,
    exclude_dev: bool = False,
) -> dict[str, int]:
    """Write the train halves as a JSONL corpus for ``retriever train crosslingual``.

    Records: ``{"_id", "text", "lang", "group"}``. ``group`` links translations: XQuAD questions share their
    question id across languages (``xq:<id>``), a Tatoeba sentence and its English side share ``tt:<xxx>:<i>``.
    XQuAD paragraphs (``group`` null) give transliteration pairs only; English sentences give translation pairs only.

    Args:
        tatoeba: the Tatoeba languages to include (``rus``, ``cmn``, ...).
        exclude_dev: leave out the dev slice of the train half (for recipe runs).

    Returns:
        counts of written records by source.
    """
    split = xquad_split_of(data)
    keep = {"train"} if exclude_dev else {"train", "dev"}
    allowed = {a for a in split.train if not (exclude_dev and a in split.dev)}
    counts = {"xquad_paragraphs": 0, "xquad_questions": 0, "tatoeba_sentences": 0}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:

        def emit(record: dict) -> None:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

        for lang in xquad:
            folder = Path(data) / "xquad" / lang
            for doc in load_jsonl(folder / "corpus.jsonl"):
                if xquad_article(doc["_id"]) in allowed:
                    emit({"_id": f"xq-{lang}-{doc['_id']}", "text": doc["text"], "lang": lang, "group": None})
                    counts["xquad_paragraphs"] += 1
            paragraph_of = _xquad_qrels(folder)
            for query_id, text in read_queries(folder / "queries.jsonl").items():
                if xquad_article(paragraph_of[query_id]) in allowed:
                    emit({"_id": f"xq-{lang}-{query_id}", "text": text, "lang": lang, "group": f"xq:{query_id}"})
                    counts["xquad_questions"] += 1
        for lang in tatoeba:
            folder = Path(data) / "tatoeba" / f"{lang}-eng"
            queries = {tatoeba_pair_id(q): text for q, text in read_queries(folder / "queries.jsonl").items()}
            docs = {tatoeba_pair_id(r["_id"]): r["text"] for r in load_jsonl(folder / "corpus.jsonl")}
            halves = tatoeba_split(lang, queries)
            for pid in sorted(queries, key=int):
                if halves[pid] in keep and pid in docs:
                    group = f"tt:{lang}:{pid}"
                    emit({"_id": f"tt-{lang}-q{pid}", "text": queries[pid], "lang": lang, "group": group})
                    emit({"_id": f"tt-{lang}-d{pid}", "text": docs[pid], "lang": "eng", "group": group})
                    counts["tatoeba_sentences"] += 2
    tmp.replace(out)
    log.info("wrote %s: %s", out, counts)
    return counts


def _xquad_qrels(folder: Path) -> dict[str, str]:
    """Query id -> its one relevant paragraph id (XQuAD judges exactly one per question)."""
    qrels = read_qrels(folder / "qrels" / "test.tsv")
    return {query: doc for query, docs in qrels.items() for doc, score in docs.items() if score > 0}


def write_dev_collection(data: Path, out: Path, *, tatoeba: Iterable[str], per_language: int = 8) -> dict[str, int]:
    """A BEIR folder (``qrels/dev.tsv``) from the Tatoeba dev slice of the train half, for choosing the step of a
    recipe run (``retriever train crosslingual --eval OUT --eval-split dev``) that trained with ``exclude_dev``.

    Per language, the first ``per_language`` dev pairs give two queries each: the romanized sentence -> its native
    sentence (the script barrier), and the native sentence -> its English side (what must not get worse). The
    corpus holds every native and English sentence of those pairs.
    """
    from retriever.encoders.crosslingual.transliterate import romanize

    out = Path(out)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    corpus, queries, qrels = [], [], []
    for lang in tatoeba:
        folder = Path(data) / "tatoeba" / f"{lang}-eng"
        native = {tatoeba_pair_id(q): text for q, text in read_queries(folder / "queries.jsonl").items()}
        english = {tatoeba_pair_id(r["_id"]): r["text"] for r in load_jsonl(folder / "corpus.jsonl")}
        halves = tatoeba_split(lang, native)
        chosen = [pid for pid in _rank([p for p, h in halves.items() if h == "dev" and p in english], f"tatoeba-dev-eval:{lang}")][:per_language]
        for pid, roman in zip(chosen, romanize([native[p] for p in chosen])):
            corpus += [{"_id": f"{lang}-n{pid}", "title": "", "text": native[pid]}, {"_id": f"{lang}-e{pid}", "title": "", "text": english[pid]}]
            queries += [{"_id": f"{lang}-r{pid}", "text": roman}, {"_id": f"{lang}-q{pid}", "text": native[pid]}]
            qrels += [(f"{lang}-r{pid}", f"{lang}-n{pid}"), (f"{lang}-q{pid}", f"{lang}-e{pid}")]
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        with open(out / name, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    with open(out / "qrels" / "dev.tsv", "w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        handle.writelines(f"{q}\t{d}\t1\n" for q, d in qrels)
    return {"documents": len(corpus), "queries": len(queries)}

"""Self-supervised code-search pairs from source trees (the way CodeSearchNet was built), for the shared trainer.

Every Python function of the given trees is a training item. An example is either
- *docstring -> code*: the docstring's summary, written like a search query (lower case, no punctuation,
  token-level deletion/swap/replacement), against the function without its docstring, augmented; or
- *code -> code*: two independently augmented views of the function (ContraBERT), so that renamed,
  reordered or padded programs embed alike.
Functions equal to an excluded corpus's function (CoSQA, when training for it) are removed first, by the hash
of their normalized text and of their AST, and duplicates within the trees are kept once. A slice of the
functions with docstrings is held out as a validation set (docstring -> code, docstrings removed), written as a
BEIR folder for :class:`training.dev_eval.DevSet`.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexing.code_reader import PYTHON_SUFFIXES, python_functions, read_source, source_files
from indexing.errors import CorpusError, RetrieverError
from retriever.encoders.code.identifiers import preprocess_code, split_identifier
from training.code_augment import augment_program, remove_docstrings, rename_function
from training.config import CodeConfig
from training.data import EpochOrder, Example, example_rng, tokenize_texts
from training.text_augment import token_delete, token_replace, token_swap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainFunction:
    """A function usable for training: its source, its docstring summary ("" when none), where it came from."""

    code: str
    summary: str
    origin: str


def normalized_hashes(code: str) -> set[str]:
    """Hashes a function is known by: its whitespace-collapsed text and, when it parses, its AST without
    comments, docstrings and layout. Two functions sharing either are the same for deduplication."""
    hashes = {hashlib.sha1(" ".join(code.split()).encode("utf-8")).hexdigest()}
    try:
        tree = ast.parse(code)  # the AST holds no comments; docstrings are dropped below
    except (SyntaxError, ValueError, RecursionError):
        return hashes
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:]
    hashes.add(hashlib.sha1(ast.dump(tree).encode("utf-8")).hexdigest())
    return hashes


def corpus_hashes(paths: Iterable[str | Path]) -> set[str]:
    """The normalized hashes of every document text of the given corpora (any format ``read_corpus`` reads)."""
    from indexing.readers import read_corpus

    out: set[str] = set()
    for doc in read_corpus([Path(p) for p in paths]):
        out |= normalized_hashes(doc.text)
    return out


def summary_of(docstring: str) -> str:
    """The docstring's first paragraph, one line; "" when it is not prose (doctest, parameter lists)."""
    first = " ".join(docstring.strip().split("\n\n")[0].split())
    if not first or first.startswith((">>>", ":param", "Args:", "Parameters")):
        return ""
    return first


def collect_functions(paths: Sequence[str | Path], *, exclude: set[str], min_lines: int = 3,
                      max_chars: int = 4000) -> tuple[list[TrainFunction], dict[str, int]]:
    """Every Python function under ``paths`` that parses, spans ``min_lines`` lines or more and at most
    ``max_chars`` characters, minus those whose hashes are in ``exclude``, duplicates kept once.

    Returns the functions (sorted by origin, deterministic) and counts of what was kept and dropped.

    Raises:
        CorpusError: a path does not exist.
    """
    for root in paths:
        if not Path(root).exists():
            raise CorpusError(root, "no such file or directory")
    kept: list[TrainFunction] = []
    seen: set[str] = set()
    counts = {"files": 0, "unparsable_files": 0, "functions": 0, "too_short_or_long": 0, "excluded": 0,
              "duplicates": 0, "kept": 0, "with_summary": 0}
    for root in paths:
        for rel, path in source_files(Path(root), PYTHON_SUFFIXES):
            counts["files"] += 1
            try:
                functions = python_functions(read_source(path.read_bytes(), path))
            except (SyntaxError, ValueError, RecursionError, OSError):
                counts["unparsable_files"] += 1
                continue
            for fn in functions:
                counts["functions"] += 1
                if fn.end_line - fn.start_line + 1 < min_lines or len(fn.code) > max_chars:
                    counts["too_short_or_long"] += 1
                    continue
                hashes = normalized_hashes(fn.code)
                if hashes & exclude:
                    counts["excluded"] += 1
                    continue
                if hashes & seen:
                    counts["duplicates"] += 1
                    continue
                seen |= hashes
                kept.append(TrainFunction(fn.code, summary_of(fn.docstring), f"{Path(root).name}/{rel}:{fn.qualname}:{fn.def_line}"))
    kept.sort(key=lambda f: f.origin)
    counts["kept"] = len(kept)
    counts["with_summary"] = sum(1 for f in kept if f.summary)
    return kept, counts


_PUNCT = re.compile(r"[^\w\s]+")


def as_query(summary: str) -> str:
    """A docstring summary written the way people type searches: lower case, punctuation dropped."""
    return " ".join(_PUNCT.sub(" ", summary.lower()).split())


QUERY_KINDS = ("summaries", "names", "both")
"""What ``code-pairs`` writes as queries: docstring summaries, function names, or both (two queries per function)."""


def name_query(origin: str, *, language: str = "python") -> str:
    """A search written from a function's name: ``"lib/io.py:Reader.read_all_lines:12"`` -> ``"python read all
    lines"`` (the language word first or last, picked by a hash of ``origin``; web searches for code name the
    language, 98.7% of CoSQA's do). "" when the name says too little to be a search: fewer than two words, a
    private or dunder name, or a test.
    """
    parts = origin.rsplit(":", 2)
    name = (parts[1] if len(parts) == 3 else origin).split(".")[-1]
    words = split_identifier(name)
    if len(words) < 2 or name.startswith("_") or words[0] == "test":
        return ""
    first = hashlib.sha1(origin.encode()).digest()[0] % 2 == 0
    return " ".join([language, *words] if first else [*words, language])


def _without_name(code: str) -> str:
    """``code`` with its function renamed to ``v0`` (so a name query never meets itself verbatim);
    unchanged when it does not parse."""
    try:
        return rename_function(code, None, style="uninformative")
    except (SyntaxError, ValueError, RecursionError):
        return code


def split_validation(functions: list[TrainFunction], count: int) -> tuple[list[TrainFunction], list[TrainFunction]]:
    """Hold out ``count`` functions with a summary, picked by the hash of their origin (stable across runs).
    Returns (training, validation)."""
    ranked = sorted((hashlib.sha1(f.origin.encode()).hexdigest(), i) for i, f in enumerate(functions) if f.summary)
    held = {i for _, i in ranked[:count]}
    return [f for i, f in enumerate(functions) if i not in held], [functions[i] for i in sorted(held)]


def write_search_folder(folder: Path, functions: Sequence[TrainFunction], *, split: str = "dev",
                        keep_docstrings: bool = False, max_query_words: int = 0,
                        queries: str = "summaries") -> dict[str, int]:
    """Functions as a BEIR code-search folder: ``corpus.jsonl`` holds every function (id ``f<n>``, title "",
    text = the code, docstrings removed unless ``keep_docstrings``, ``origin`` = where it came from),
    ``queries.jsonl`` the docstring summaries written as searches (:func:`as_query`, id ``q<n>``), and
    ``qrels/<split>.tsv`` links each query to its function. Functions without a summary, or (``max_query_words``
    > 0) with a longer one, are documents only (distractors). ``queries="names"`` writes a search made from the
    function's name instead (:func:`name_query`, id ``n<n>``) and renames the function in its document, so the
    query is not found verbatim; ``"both"`` writes both queries (the document renamed). Texts are written raw;
    indexes and DevSets apply a preset's preprocessing themselves.

    Raises:
        RetrieverError: an unknown ``queries`` kind.

    Returns counts: ``documents`` and ``queries``. Each file is written to a temporary name and renamed.
    """
    folder = Path(folder)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    files = {"corpus": folder / "corpus.jsonl", "queries": folder / "queries.jsonl", "qrels": folder / "qrels" / f"{split}.tsv"}
    if queries not in QUERY_KINDS:
        raise RetrieverError(f"unknown query kind {queries!r} (choose from {', '.join(QUERY_KINDS)})")
    temporary = {name: path.with_name(path.name + ".tmp") for name, path in files.items()}
    count = 0
    with open(temporary["corpus"], "w", encoding="utf-8") as corpus, \
            open(temporary["queries"], "w", encoding="utf-8") as query_file, \
            open(temporary["qrels"], "w", encoding="utf-8") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for number, fn in enumerate(functions):
            text = fn.code if keep_docstrings else remove_docstrings(fn.code)
            named = name_query(fn.origin) if queries != "summaries" else ""
            if named:
                text = _without_name(text)
            corpus.write(json.dumps({"_id": f"f{number}", "title": "", "text": text, "origin": fn.origin}) + "\n")
            written = [(f"q{number}", as_query(fn.summary))] if queries != "names" else []
            if named:
                written.append((f"n{number}", named))
            for query_id, query in written:
                if query and (max_query_words <= 0 or len(query.split()) <= max_query_words):
                    query_file.write(json.dumps({"_id": query_id, "text": query}) + "\n")
                    qrels.write(f"{query_id}\tf{number}\t1\n")
                    count += 1
    for name, path in files.items():
        temporary[name].replace(path)
    return {"documents": len(functions), "queries": count}


class CodeData:
    """Docstring -> code and code -> code pairs (see the module docstring), augmented per example position."""

    negatives_per_example = 0

    def __init__(self, functions: Sequence[TrainFunction], tokenizer: Any, config: CodeConfig, *, max_tokens: int,
                 seed: int, query_prefix: str = "", document_prefix: str = ""):
        if not functions:
            raise RetrieverError("no training function (the sources hold none that parses and is long enough)")
        self.functions = list(functions)
        self.tokenizer = tokenizer
        self.config = config
        self.max_tokens = max_tokens
        self.seed = seed
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.order = EpochOrder(len(self.functions), seed)
        self.vocabulary = sorted({w for f in self.functions for w in as_query(f.summary).split()})
        self.counts: dict[str, int] = {}
        self.validation_dir: Path | None = None  # set by build_code_data when functions are held out

    def __len__(self) -> int:
        return len(self.functions)

    def pair(self, position: int) -> tuple[str, str]:
        """The (query, key) texts of example ``position``, before preprocessing."""
        fn = self.functions[self.order(position)]
        rng = example_rng(self.seed, position)
        cfg = self.config

        def augment(code: str) -> str:
            try:
                return augment_program(code, rng, probability=cfg.augment)
            except (SyntaxError, ValueError, RecursionError):  # the function parsed when collected; be safe anyway
                return code

        if fn.summary and rng.random() < cfg.doc_ratio:
            query = as_query(fn.summary)
            query = token_delete(query, rng, cfg.token_delete)
            query = token_replace(query, rng, self.vocabulary, cfg.token_replace)
            if rng.random() < cfg.token_swap:
                query = token_swap(query, rng)
            return query, augment(remove_docstrings(fn.code))
        return augment(fn.code), augment(fn.code)

    def examples(self, start: int, count: int) -> list[Example]:
        pairs = [self.pair(p) for p in range(start, start + count)]
        queries = [self.query_prefix + preprocess_code(q) for q, _ in pairs]
        keys = [self.document_prefix + preprocess_code(k) for _, k in pairs]
        query_ids = tokenize_texts(self.tokenizer, queries, max_length=self.max_tokens)
        key_ids = tokenize_texts(self.tokenizer, keys, max_length=self.max_tokens)
        return [Example(q, k) for q, k in zip(query_ids, key_ids)]

    def describe(self) -> dict[str, Any]:
        return {"kind": "code", "functions": len(self.functions),
                "with_summary": sum(1 for f in self.functions if f.summary), "collected": self.counts}


def build_code_data(config, tokenizer: Any, base, out: Path, dist) -> CodeData:
    """The :class:`CodeData` of a ``code`` run: collect, exclude, hold out ``config.code.validation`` functions
    (written to ``out/validation`` by rank 0 and exposed as ``validation_dir``), log the counts."""
    from training.distributed import barrier

    exclude = corpus_hashes(config.code.exclude) if config.code.exclude else set()
    functions, counts = collect_functions(config.data, exclude=exclude, min_lines=config.code.min_lines)
    training, held = split_validation(functions, config.code.validation)
    log.info("code functions: %s; %d held out for validation", json.dumps(counts), len(held))
    data = CodeData(training, tokenizer, config.code, max_tokens=config.max_tokens, seed=config.seed,
                    query_prefix=base.query_prefix, document_prefix=base.document_prefix)
    data.counts = counts
    data.validation_dir = None
    if held:
        folder = Path(out) / "validation"
        if dist.is_main:
            write_search_folder(folder, held)
            (Path(out) / "code_data.json").write_text(json.dumps({**counts, "validation": len(held)}, indent=2) + "\n",
                                                      encoding="utf-8")
        barrier(dist)
        data.validation_dir = folder
    return data

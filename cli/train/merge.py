"""``retriever train merge``: average trained models' weights (WiSE-FT / model soup), without training."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import console, print_json, user_errors
from cli.train.options import JsonFlag
from indexing.errors import RetrieverError


@user_errors
def merge(
    models: list[str] = typer.Argument(..., help="Two or more models of one architecture (aliases, folders or hub ids), e.g. two fine-tunings of one base; or one --query-only model with --query-route."),
    out: Path = typer.Option(..., "--out", "-o", help="Output model folder (sentence-transformers)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Comma-separated weight per model, summing to 1 (default: equal)."),
    query_route: Optional[float] = typer.Option(None, "--query-route", min=0.0, max=1.0,
                                                help="One --query-only model: the weight of its trained query route against its document route (the base); the documents keep their embeddings."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    as_json: JsonFlag = False,
) -> None:
    """Average the parameters of fine-tuned models (WiSE-FT / model soup), with no training: the merged model's
    skills usually lie between those of its parts, often above the line that joins them."""
    from transformers.utils import logging as hf_logging

    from training.merge import merge_models, merge_query_route

    hf_logging.disable_progress_bar()
    if query_route is not None:
        if len(models) != 1 or weights is not None:
            raise RetrieverError("--query-route takes exactly one (query-only) model and no --weights")
        result = merge_query_route(models[0], out, weight=query_route, overwrite=overwrite)
    else:
        parsed = None
        if weights is not None:
            try:
                parsed = [float(w) for w in weights.split(",")]
            except ValueError:
                raise RetrieverError(f"--weights: not a comma-separated list of numbers: {weights!r}") from None
        result = merge_models(models, out, weights=parsed, overwrite=overwrite)
    if as_json:
        record = {"out": str(result.out), "models": result.models, "weights": result.weights, "tensors": result.tensors}
        print_json(record if query_route is None else {**record, "query_route_weight": query_route})
        return
    parts = ", ".join(f"{w:g} x {m}" for m, w in zip(result.models, result.weights))
    console.print(f"merged [bold]{result.out}[/]: {parts} ({result.tensors} tensors)", highlight=False)

"""``retriever train ...``: contriever (unsupervised, from a corpus), finetune (supervised, from pairs), url,
crosslingual (transliteration contrast, from multilingual text), code (self-supervised code search, from source trees)
and sql (demonstration retrieval, from a pool of measured SQL rewrites); merge averages trained models' weights.

Both run under ``torchrun --nproc_per_node N`` unchanged (DDP; only rank 0 writes and draws progress).

Modules: ``shared`` (option groups declared once), ``options`` (the shared groups), ``launch`` (config, run, report),
``progress`` (the bar), one module per objective group (``text``, ``url``, ``crosslingual``, ``code``, ``sql``) and
``merge``.
"""

from __future__ import annotations

import typer

from cli.train import code, crosslingual, merge, sql, text, url

app = typer.Typer(help="Train retrieval models (output: a sentence-transformers folder).", no_args_is_help=True)
app.command()(text.contriever)
app.command()(text.finetune)
app.command()(url.url)
app.command()(crosslingual.crosslingual)
app.command()(code.code)
app.command("code-pairs")(code.code_pairs)
app.command()(sql.sql)
app.command()(merge.merge)

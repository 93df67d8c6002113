"""The cross-lingual encoder: multilingual-e5-small (``query: ``/``passage: `` prefixes) and romanization (uroman)."""

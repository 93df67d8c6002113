"""The ``crosslingual`` preset: multilingual-e5-small (its ``query: ``/``passage: `` prefixes come with the model).

Romanization (``--transliterate``) is a separate, recorded step: see :mod:`.transliterate`."""

from retriever.encoders.preset import Preset

PRESET = Preset("crosslingual", "multilingual-e5-small", "multilingual text (multilingual-e5-small)")

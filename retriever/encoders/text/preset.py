"""The ``text`` preset: English text, all-MiniLM-L6-v2, texts encoded as written."""

from retriever.encoders.preset import Preset

PRESET = Preset("text", "minilm", "English text (all-MiniLM-L6-v2)")

"""The code encoder: source code with its identifiers split into words next to the raw code."""

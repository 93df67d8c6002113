"""The ``code`` preset: source trees read one document per function, identifiers split into words."""

from retriever.encoders.preset import Preset


def code_identifiers(text: str) -> str:
    """``code-identifiers-v1``: see :func:`retriever.encoders.code.identifiers.preprocess_code`."""
    from retriever.encoders.code.identifiers import preprocess_code

    return preprocess_code(text)


PRESET = Preset("code", "minilm", "source code: identifiers split into words next to the raw code (base all-MiniLM-L6-v2)",
                preprocessor="code-identifiers-v1", preprocess=code_identifiers, documents="code")

"""Encoders: the Encoder protocol and its sentence-transformers implementation (``base``), the preset registry
(``presets``), the torch-free ONNX query encoder (``onnx_query``, written by ``onnx_export``), and one folder per
specialized encoder holding its preset, its preprocessing and its tokenizer:

    text/          English text (all-MiniLM-L6-v2)
    crosslingual/  multilingual text (multilingual-e5-small), romanization with uroman
    code/          source code: identifiers split into words
    url/           URLs: URL-aware pieces, a WordPiece tokenizer trained on URLs, phishing classification
    sql/           SQL queries: structure features before the literal-free text
"""

"""The URL encoder: URL-aware pieces, a WordPiece tokenizer trained on URLs, and URL classification."""

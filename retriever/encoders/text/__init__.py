"""The default text encoder: English text with all-MiniLM-L6-v2, no preprocessing."""

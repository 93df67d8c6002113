"""Model resolution (local folder, packaged offline alias, hub id) and offline model converters."""

"""The search side: dense search (``searcher``), BM25 with Lucene (``bm25``) and where it lives in an index folder
(``bm25_index``), score fusion (``fusion``) and hybrid search (``hybrid``)."""

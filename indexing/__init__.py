"""Corpus reading, chunking, FAISS indexes, doc store and the on-disk index directory.

This package never imports ``retriever``: it takes vectors and an encoder *description*, not a model.
"""

"""Evaluation: metrics with ir-measures and paired tests (``metrics``), and whole-split runs of an index (``runner``)."""

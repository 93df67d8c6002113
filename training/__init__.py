"""Training retrieval encoders: Contriever-style unsupervised pre-training and supervised fine-tuning.

Modules: ``config`` (frozen settings), ``crops`` (augmentations, pure), ``losses`` (InfoNCE, pure), ``moco``
(queue, momentum), ``data`` (position-addressed examples), ``pairs`` (supervised pairs, negative mining),
``distributed`` (DDP setup, gathering), ``checkpoint`` (safetensors + JSON), ``trainer`` (the loop),
``dev_eval`` (selection during training), ``scratch`` (tokenizer + BERT from nothing), ``export`` (the output
sentence-transformers folder), ``run`` (:func:`training.run.run_training`, the entry point).
"""

"""The training app behind ``dora-diag train``: run settings (``config``), data, the builtin
model and its task-A base, Hugging Face models, the loop, the trainer and the matched trial.
The adapters it trains come from ``dora_diag.adapters``.

``dora_diag.train.config`` (TrainConfig, which the CLI reads its defaults from) imports
without torch; transformers is never imported at module import time.
"""

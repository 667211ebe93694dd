"""scale-lab: optimizers (``optim``), instrumentation (``instrument``), training (``train``)
and results (``results``) for studying SCALE (arXiv 2506.16659) and its baselines.
"""

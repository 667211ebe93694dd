"""The placement advisor: where *your* model needs momentum, and the check of that advice.

``probe`` measures each matrix's gradient variance on your batches (column normalization, no
momentum, after warmup); ``plan`` turns it into the paper's Theorem 2.1 prediction (arXiv
2506.16659) and the exact best placement under a memory budget; ``advisor`` gives the table,
curve, figure and recipe (``from analysis import advise``); ``cli`` is ``scale-lab advise``.
"""

"""Baselines that are library optimizers, built for a model's roles: ``torch.optim.AdamW`` on
every parameter, ``torch.optim.Muon`` on hidden matrices with AdamW on the rest,
``torch.optim.Adafactor``, and pytorch-optimizer's low-rank family (GaLore, Fira, APOLLO,
APOLLO-Mini: arXiv 2403.03507, 2410.01623, 2412.05270) on hidden matrices with AdamW elsewhere,
as the GaLore-protocol papers apply them.

Each builder takes ``(layout, cfg)`` (``analysis.optim.roles.Layout``,
``analysis.optim.hyper.OptimizerConfig``) and returns the optimizer; ``analysis.optim.recipes``
names them.
"""

from __future__ import annotations

import torch

from analysis.optim.hyper import role_groups
from analysis.optim.optimizer import PartitionedOptimizer
from analysis.optim.roles import ROLES
from analysis.optim.state import RANK1, SUBSPACE


def torch_adamw(layout, cfg, roles):
    """``torch.optim.AdamW`` on the parameters of ``roles``, at the config's lr, betas, eps, decay."""
    return torch.optim.AdamW(
        role_groups(layout, cfg, roles),
        lr=cfg.lr,
        betas=cfg.betas,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
    )


def adamw(layout, cfg):
    """AdamW on every parameter (the ``adamw`` recipe)."""
    return torch_adamw(layout, cfg, ROLES)


def rest_adamw(layout, cfg):
    """AdamW on everything but the hidden matrices (the partner of Muon & co)."""
    return torch_adamw(layout, cfg, ("embedding", "output", "vector"))


def muon(layout, cfg):
    """``torch.optim.Muon`` (Nesterov momentum 0.95, Newton-Schulz) on hidden matrices, AdamW on
    the rest."""
    # Moonshot's RMS matching (0.2 sqrt(max(A, B)) lr) lets Muon share AdamW's learning rates.
    hidden = torch.optim.Muon(
        role_groups(layout, cfg, ("hidden",)),
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        momentum=0.95,
        nesterov=True,
        ns_steps=cfg.ns_steps,
        adjust_lr_fn="match_rms_adamw",
    )
    return PartitionedOptimizer([hidden, rest_adamw(layout, cfg)])


def adafactor(layout, cfg):
    """``torch.optim.Adafactor`` (factored second moment) on every parameter."""
    return torch.optim.Adafactor(role_groups(layout, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)


def low_rank(class_name: str, **group_keys):
    """A builder of pytorch-optimizer's ``class_name`` (with ``group_keys`` in each hidden group;
    rank ``cfg.rank``, default hidden size / 4) on hidden matrices, AdamW elsewhere."""

    def build(layout, cfg):
        import pytorch_optimizer  # optional extra `baselines`: imported only when used

        rank = cfg.rank or max(1, layout.model.config.hidden_size // 4)
        keys = {"rank": rank, "update_proj_gap": cfg.update_proj_gap, **group_keys}
        if class_name == "APOLLO" and group_keys.get("scale_type") == "tensor":
            keys["rank"] = 1  # APOLLO-Mini: rank-1 random projection, tensor-wise scaling
        groups = [{**g, **keys} for g in role_groups(layout, cfg, ("hidden",))]
        opt = getattr(pytorch_optimizer, class_name)(
            groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        return PartitionedOptimizer([opt, rest_adamw(layout, cfg)])

    return build


LOW_RANK = {  # name: (pytorch-optimizer class, its group keys, state rule, description)
    "galore": (
        "GaLore",
        {"scale": 0.25, "projection_type": "std"},
        SUBSPACE,
        "GaLore Adam in a rank-r gradient subspace (SVD projector)",
    ),
    "fira": (
        "Fira",
        {"scale": 0.25, "projection_type": "std"},
        SUBSPACE,
        "Fira: GaLore plus the scaled full-rank residual",
    ),
    "apollo": (
        "APOLLO",
        {"scale": 1.0, "scale_type": "channel", "projection_type": "random"},
        SUBSPACE,
        "APOLLO: channel-wise scaling from a rank-r random projection",
    ),
    "apollo_mini": (
        "APOLLO",
        {"scale": 128.0, "scale_type": "tensor", "projection_type": "random"},
        RANK1,
        "APOLLO-Mini: tensor-wise scaling from a rank-1 random projection",
    ),
}

"""MurreNet (Liu et al., MICCAI 2025), registered as model ``"murrenet"``."""

from casegraph.models.murrenet.model import ABLATIONS, MurreNetModel, MurreNetNet
from casegraph.models.registry import MODELS

MODELS.register("murrenet")(MurreNetModel)

__all__ = ["ABLATIONS", "MurreNetModel", "MurreNetNet"]

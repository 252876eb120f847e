"""CCL (Zhou, Zhou, Chen, IEEE TMI 2024), registered as model ``"ccl"``."""

from casegraph.models.ccl.model import COMPONENTS, ENCODER_SETS, CCLModel, CCLNet
from casegraph.models.registry import MODELS

MODELS.register("ccl")(CCLModel)

__all__ = ["COMPONENTS", "ENCODER_SETS", "CCLModel", "CCLNet"]

"""Training: ``robeval.train.train(TrainSpec(...))`` writes a checkpoint ``robeval run`` reads."""

from robeval.train.loop import TrainResult, train
from robeval.train.objectives import objectives
from robeval.train.regularisers import regularisers
from robeval.train.spec import TrainSpec

__all__ = ["TrainResult", "TrainSpec", "objectives", "regularisers", "train"]

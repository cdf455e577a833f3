"""`reidaug synth`: a synthetic Market-1501 root with exact keypoints (the project's embedded dataset).

from reidaug.data.synth import SynthConfig, make_dataset
make_dataset("data/synth", SynthConfig())   # or load_config(SynthConfig, "synth/default", ["synth.train_ids=50"])
"""

from .config import SynthConfig, validate
from .dataset import make_dataset, plan

__all__ = ["SynthConfig", "make_dataset", "plan", "validate"]

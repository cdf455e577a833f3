"""torchvision's Keypoint R-CNN (ResNet-50 FPN, COCO) on crops: COCO-17 mapped to COCO-18, batched on the GPU.

Weights come from `--weights PATH` or torchvision's cache (torch.hub.get_dir()/checkpoints/ with the file
name of KeypointRCNN_ResNet50_FPN_Weights.COCO_V1); nothing is ever downloaded. The highest-scoring person
detection of each crop is kept. A non-reference detector (architecture notes 14.2, item 11).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reidaug.data.keypoints import NUM_JOINTS
from reidaug.errors import ReidaugError
from reidaug.pose.mapping import to_coco18, to_pixels
from reidaug.utils.io import load_weights

if TYPE_CHECKING:
    from reidaug.pose.base import PoseConfig


@dataclass
class KeypointRCNNConfig:
    weights: str | None = None  # a state dict; default: torchvision's cached COCO_V1 checkpoint
    min_size: int = 400  # the crop is resized so its short side is this (COCO training: 640-800)
    max_size: int = 1333
    min_box_score: float = 0.5  # best person detection below this: no person (all -1)
    min_keypoint_score: float = 2.0  # a joint whose heatmap logit is below this is -1


def cached_weights() -> Path:
    """Where torchvision keeps the COCO_V1 checkpoint once downloaded."""
    import torch
    from torchvision.models.detection import KeypointRCNN_ResNet50_FPN_Weights

    name = Path(KeypointRCNN_ResNet50_FPN_Weights.COCO_V1.url).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def detection_to_coco18(det: dict, size: tuple[int, int], cfg: KeypointRCNNConfig) -> np.ndarray:
    """The best person of one image's Keypoint R-CNN output as (18, 2) [y, x] pixel indices."""
    scores = det["scores"].float().cpu().numpy()
    if not len(scores) or scores.max() < cfg.min_box_score:
        return to_pixels(np.zeros((NUM_JOINTS, 2)), np.zeros(NUM_JOINTS, bool), size, continuous=True)
    best = int(scores.argmax())
    kp = det["keypoints"][best].float().cpu().numpy()  # (17, 3) x, y, visibility
    ok = det["keypoints_scores"][best].float().cpu().numpy() >= cfg.min_keypoint_score
    xy, present = to_coco18(kp[:, :2], ok, "coco17")
    return to_pixels(xy, present, size, continuous=True)


class KeypointRCNN:
    name = "keypointrcnn"

    def __init__(self, cfg: KeypointRCNNConfig, device: str = "cpu"):
        import torch
        from torchvision.models.detection import keypointrcnn_resnet50_fpn

        path = Path(cfg.weights) if cfg.weights else cached_weights()
        if not path.is_file():
            if cfg.weights:
                raise ReidaugError(f"Keypoint R-CNN weights {path} not found")
            raise ReidaugError(
                f"Keypoint R-CNN weights not found at {path} (torchvision's cache; nothing is downloaded): "
                "pass --weights PATH, a state dict of torchvision's keypointrcnn_resnet50_fpn"
            )
        self.cfg = cfg
        self.device = torch.device(device)
        model = keypointrcnn_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=2, num_keypoints=17,
            min_size=cfg.min_size, max_size=cfg.max_size,
            box_detections_per_img=1,  # only the best person is kept: the keypoint head runs on it alone
        )  # fmt: skip
        state = load_weights(path, what="Keypoint R-CNN weights")
        try:
            model.load_state_dict(state)
        except Exception as e:  # unpickling and key/shape mismatches
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ReidaugError(f"{path} is not a keypointrcnn_resnet50_fpn state dict: {msg[:200]}") from None
        self.model = model.eval().to(self.device)

    def predict(self, images: Sequence[np.ndarray], names: Sequence[str]) -> list[np.ndarray | str]:
        import torch

        batch = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).to(self.device).float() / 255
                 for im in images]  # fmt: skip
        with torch.inference_mode():
            dets = self.model(batch)
        return [detection_to_coco18(d, im.shape[:2], self.cfg) for d, im in zip(dets, images)]


def build(cfg: PoseConfig) -> KeypointRCNN:
    from reidaug.utils.runtime import resolve_device

    return KeypointRCNN(cfg.keypointrcnn, str(resolve_device(cfg.device)))

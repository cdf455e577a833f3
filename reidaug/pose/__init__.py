"""Keypoint extraction: OpenPose COCO-18 keypoints for re-ID crops from a built-in estimator or imported files.

`extract_poses(images, out, cfg)` writes the annotation CSV (`name:keypoints_y:keypoints_x`); backends:
`mediapipe` (BlazePose, offline, CPU), `keypointrcnn` (torchvision, GPU batches), `openpose-json`.
"""

from reidaug.pose.base import (
    BACKENDS,
    PoseBackend,
    PoseConfig,
    PoseSummary,
    backend_names,
    build_backend,
    extract_poses,
    register,
)

__all__ = [
    "BACKENDS",
    "PoseBackend",
    "PoseConfig",
    "PoseSummary",
    "backend_names",
    "build_backend",
    "extract_poses",
    "register",
]

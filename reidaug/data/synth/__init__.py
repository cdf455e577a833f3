"""`reidaug synth`: a synthetic Market-1501 root with exact keypoints (the project's embedded dataset)."""

"""Data: the Market-1501 layout, COCO-18 keypoints, pairs and the synthetic Market-style dataset."""

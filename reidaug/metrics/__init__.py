"""Evaluation metrics: SSIM, mask-SSIM, IS, mask-IS, FID, LPIPS, PCKh (architecture notes 11)."""

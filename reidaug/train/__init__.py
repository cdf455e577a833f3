"""The generic GAN trainer: config, pair data, the loop, checkpoints and DDP helpers."""

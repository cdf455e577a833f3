"""The generic trainer: the recipe config, the loop and the step helper methods train with, checkpoint writing, DDP."""

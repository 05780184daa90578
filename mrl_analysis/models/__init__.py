"""Matryoshka heads on torchvision backbones, the loss, checkpoints, training."""

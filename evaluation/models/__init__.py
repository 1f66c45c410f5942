"""Backbones of the metrics, built from maintained packages (open_clip, timm, torchvision) and local weights."""

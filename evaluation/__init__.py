"""The paper's VBench metrics per layer (FG, BG, BL), the generation / decomposition / score runners and reports.

Importing this package loads no model and no heavy library; metrics import open_clip / timm / torchvision
only when they are built.
"""

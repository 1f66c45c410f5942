"""Quiet library output in our commands: what a user cannot act on does not reach the terminal.

transformers draws a "Loading weights" bar when it reads a model folder and a "Writing model shards" bar when it
writes one; our commands only read and write local folders, in well under a second for the tiny models, so the bars
say nothing (the denoising and training progress bars are ours and stay). Called by the commands (generate, train,
precompute), not on import, so a library user keeps transformers' defaults.
"""
from __future__ import annotations


def quiet_weight_bars() -> None:
    """No transformers progress bars for reading or writing a model folder (from_pretrained / save_pretrained).
    This also turns off huggingface_hub's download bars in this process: our commands read local folders only
    (`layerflow weights` downloads, and does not call this)."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

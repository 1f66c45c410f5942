"""Quiet Lightning in `layerflow train` / `layerflow precompute` (and what runs them: the demo, the toy world).

Each filter names one message that a user of our commands cannot act on; everything else Lightning, torch or the
data libraries say still reaches the terminal, and so do our own warnings, the progress bar and the run's summary.
Filters are added once per process (`quiet_training`), in front of any -W / PYTHONWARNINGS setting.
"""
from __future__ import annotations

import logging
import warnings

from model.quiet import quiet_weight_bars

# Lightning's info lines (logger `...utilities.rank_zero`, printed on rank 0) that carry no information for our runs:
# the device lines restate the config's `trainer.accelerator` (a GPU left unused still gets Lightning's own
# "GPU available but not used" warning), and the tip advertises a cloud logger (Lightning has no switch for it in
# 2.6: it is printed whenever no LitLogger is configured).
LIGHTNING_INFO_NOISE = ("GPU available:", "TPU available:", "HPU available:", "💡 Tip:")
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropLightningNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LIGHTNING_INFO_NOISE)


_FILTER = _DropLightningNoise()


def quiet_training() -> None:
    """Install the filters below (idempotent) and drop transformers' model-folder bars (`model.quiet`)."""
    quiet_weight_bars()
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    # LightningCLI (2.6) calls jsonargparse APIs that jsonargparse 4.49+ deprecates (add_instantiator,
    # instantiate_classes, skip_none), warned as JsonargparseDeprecationWarning (a DeprecationWarning; the class is
    # private to jsonargparse) from lightning/pytorch/cli.py: Lightning's code, fixed by upgrading Lightning, not by us.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"lightning\.pytorch\.cli")
    # Lightning's own pytree helper builds torch's deprecated LeafSpec (torch >= 2.10): again Lightning's code.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")
    # The VAE and T5 are frozen and kept in eval mode on purpose (LayerFlowModule.train); Lightning counts their
    # submodules as "in eval mode at the start of training" and asks to ignore the warning if intended. It is; the
    # check that still matters, the trainable transformer in eval mode, is LayerFlowModule.on_train_start's own.
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training",
                            category=PossibleUserWarning)

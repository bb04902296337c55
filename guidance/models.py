"""Model sources: `--model` names one, and each source is one adapter that returns a ModelBundle.

`emoji` is the embedded zoo; a directory holding zoo-format checkpoints (unet.safetensors, ...) is
loaded the same way.
"""

from __future__ import annotations

import torch

from guidance.bundle import ModelBundle
from guidance.zoo.load import load_zoo


def load_bundle(spec: str, device: torch.device | str = "cpu") -> ModelBundle:
    """The bundle `--model` names: 'emoji' (the embedded zoo) or a zoo-format model directory."""
    return load_zoo(None if spec == "emoji" else spec, device)

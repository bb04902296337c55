"""The inpainting, upsampler and 64 px classifier jobs train, export and load; the fine-tune starts from the
base UNet's output exactly."""

from __future__ import annotations

import os

import pytest
import torch

from guidance.zoo import emoji_data
from guidance.zoo.conditioned import ConditionedUNet
from guidance.zoo.load import ZOO_DIR, load_model
from guidance.checkpoints import read_metadata
from guidance.zoo.train_cond import main

pytestmark = pytest.mark.skipif(not (os.path.isfile(emoji_data.EMOJI_TEST_PATH)
                                     and os.path.isfile(emoji_data.NOTO_FONT_PATH)),
                                reason="the emoji dataset needs unicode-data and fonts-noto-color-emoji")


@pytest.mark.slow
def test_conditioned_jobs_train_export_and_load(tmp_path):
    out = tmp_path / "weights"
    main(["--small", "--limit", "8", "--steps", "2", "--batch", "2", "--out", str(out), "--run-dir", str(tmp_path / "run"),
          "--device", "cpu"])
    inpaint = load_model(out / "inpaint_unet.safetensors", "conditioned_unet")
    assert isinstance(inpaint, ConditionedUNet) and inpaint.cond_channels == 4
    info = read_metadata(out / "inpaint_unet.safetensors")["info"]
    assert info["steps"] == 2 and info["fine_tuned_from"]["file"] == "unet.safetensors"
    assert set(info["evaluation"]) == {"n", "plain", "edited"} and info["evaluation"]["n"] == 32
    assert "hole_mse_given_minus_step0_ci" in info["evaluation"]["edited"]
    assert info["selection"]["exported_step"] in (0, 2) and "report" not in info["selection"]
    assert inpaint.gated and inpaint.config.extra["cond_gate"] == "sigma"
    upsampler = load_model(out / "upsampler.safetensors", "conditioned_unet")
    assert upsampler.config.image_size == 64 and upsampler.aug_emb is not None
    assert load_model(out / "eval_classifier_64.safetensors", "eval_classifier").config.image_size == 64
    base = load_model(ZOO_DIR / "unet.safetensors", "unet")
    assert all(torch.equal(a, b) for a, b in zip(inpaint.text.parameters(), base.text.parameters()))  # frozen
    # the zero-initialised channels learned (unless the best checkpoint was step 0 itself)
    assert (float(inpaint.cond_stem.weight.abs().sum()) > 0) == (info["selection"]["exported_step"] == 2)

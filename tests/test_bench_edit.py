"""End-to-end editing (--task inpaint) and cascade (--cascade) runs on tiny random-weight models, and the
CLI's one-line refusals of bad editing input."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.cascade import CascadeOptions, run_cascade
from bench.cli import main as cli_main
from bench.config import BenchConfig
from bench.inpaint import InpaintOptions, edit_sources, run_inpaint
from guidance.inpaint import Resampling
from guidance.zoo import emoji_data
from guidance.zoo.conditioned import ConditionedUNet
from guidance.zoo.encoders import EncoderConfig, EvalClassifier
from guidance.zoo.load import ZOO_DIR, load_model
from guidance.zoo.store import save_model
from guidance.zoo.unet import TextUNet, UNetConfig

needs_dataset = pytest.mark.skipif(not (os.path.isfile(emoji_data.EMOJI_TEST_PATH)
                                        and os.path.isfile(emoji_data.NOTO_FONT_PATH)),
                                   reason="the emoji dataset needs unicode-data and fonts-noto-color-emoji")


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory) -> Path:
    """unet, inpaint_unet, upsampler and eval_classifier_64 at toy sizes, with the zoo's caption vocabulary."""
    root = tmp_path_factory.mktemp("zoo")
    committed = load_model(ZOO_DIR / "unet.safetensors", "unet")
    extra = {"schedule": "cosine", "num_timesteps": 1000, "p_uncond": 0.15}
    torch.manual_seed(0)
    cfg = UNetConfig(channels=16, text_width=32, text_layers=1, vocab_size=committed.config.vocab_size,
                     dropout=0.0, extra=extra)
    base = TextUNet(cfg)
    base.vocab.copy_(committed.vocab)
    base.null_tokens.copy_(committed.null_tokens)
    save_model(base, root / "unet.safetensors", "unet", cfg.to_dict())
    inpainter = ConditionedUNet.from_base(base, 4)
    save_model(inpainter, root / "inpaint_unet.safetensors", "conditioned_unet", inpainter.config.to_dict())
    up_cfg = UNetConfig(image_size=64, channels=8, channel_mult=(1, 2), attention_resolutions=(32,), text_width=16,
                        text_layers=1, vocab_size=committed.config.vocab_size, dropout=0.0,
                        extra={**extra, "cond_channels": 3, "noise_aug": True, "aug_levels": 250, "low_resolution": 32})
    upsampler = ConditionedUNet(up_cfg)
    upsampler.vocab.copy_(committed.vocab)
    upsampler.null_tokens.copy_(committed.null_tokens)
    save_model(upsampler, root / "upsampler.safetensors", "conditioned_unet", up_cfg.to_dict())
    enc = EncoderConfig(image_size=64, channels=8, blocks=1, features=32)
    save_model(EvalClassifier(enc), root / "eval_classifier_64.safetensors", "eval_classifier", enc.to_dict())
    return root


def test_edit_sources_pair_each_emoji_with_another_of_its_subgroup():
    sources = edit_sources(6)
    assert sources.images.shape == (6, 3, 32, 32)
    assert all(a != b for a, b in zip(sources.captions["source"], sources.captions["edit"]))
    assert torch.equal(edit_sources(6).images, sources.images)  # deterministic


@pytest.mark.slow
def test_tiny_editing_run(tiny_zoo, tmp_path):
    cfg = BenchConfig.from_preset("tiny", guidance=["cfg"], scales={"cfg": [3.0]}, prompt_limit=3, seeds=[0],
                                  steps=3, batch_size=4, model=str(tiny_zoo), out=str(tmp_path), run_id="edit")
    options = InpaintOptions(masks=["center", "strokes"], methods=["model", "replace", "repaint"],
                             captions=["edit"], repaint=Resampling(1, 2))
    run_dir = run_inpaint(cfg, options, progress=False)
    results = pd.read_csv(run_dir / "results.csv")
    assert len(results) == 3 * 2
    assert (results["psnr_known"] == 100).all()  # every method keeps the known region exactly
    for col in ("seam", "seam_lo", "fid", "kid", "clip_score", "acc_identity", "s_per_img"):
        assert results[col].notna().all(), col
    nfe = results.groupby("method")["nfe_per_img"].first()
    assert nfe["replace"] == nfe["model"] == 3 and nfe["repaint"] == 5
    passes = results.groupby("method")["network_passes_per_img"].first()
    assert passes["repaint"] == 10 and passes["replace"] == 6  # CFG: two passes per evaluation
    assert (pd.read_csv(run_dir / "real.csv")["seam"] == 1).all()
    assert (run_dir / "grid_center_edit.png").exists() and "source, mask" in (run_dir / "report.md").read_text()
    again = run_inpaint(cfg, options, progress=False)  # resumes: nothing resampled, same scores
    pd.testing.assert_frame_equal(pd.read_csv(again / "results.csv"), results, rtol=1e-3)


@pytest.mark.slow
@needs_dataset
def test_tiny_cascade_run(tiny_zoo, tmp_path):
    cfg = BenchConfig.from_preset("tiny", guidance=["cfg"], scales={"cfg": [3.0]}, prompt_limit=3, seeds=[0],
                                  steps=2, batch_size=4, model=str(tiny_zoo), out=str(tmp_path), run_id="cascade")
    run_dir = run_cascade(cfg, CascadeOptions(steps=2, aug=20), progress=False)
    results = pd.read_csv(run_dir / "results.csv")
    assert list(results["stage"]) == ["upsampler", "bicubic"]
    for col in ("fid", "fid_lo", "kid", "consistency_psnr", "clip_score", "acc_identity"):
        assert results[col].notna().all(), col
    assert (run_dir / "grid_cfg_s3.png").exists() and (run_dir / "report.md").exists()
    with pytest.raises(ValueError, match="outside the upsampler's training range"):
        run_cascade(cfg.with_overrides(run_id="bad"), CascadeOptions(steps=2, aug=400), progress=False)


@pytest.mark.parametrize("argv, message", [
    (["--task", "inpaint", "--masks", "center,circle"], "unknown mask kind"),
    (["--task", "inpaint", "--inpaint-methods", "paste"], "unknown inpainting method"),
    (["--task", "inpaint", "--repaint", "5"], "bad --repaint '5'"),
    (["--task", "inpaint", "--mask-file", "MISSING.png"], "mask file MISSING.png not found"),
    (["--task", "inpaint", "--cascade"], "one at a time"),
])
def test_bad_editing_input_gets_one_clear_line(argv, message, capsys, tmp_path):
    code = cli_main(["run", "--preset", "tiny", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err

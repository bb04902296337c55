"""The committed zoo loads without network, its checkpoints are validated, and each guidance steps with it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from guidance.guiders import make_guidance
from guidance.protocols import Conditions
from guidance.sampling import ddim_step, ddpm_step
from guidance.zoo.load import ZOO_DIR, load_eval_clip, load_model, load_zoo
from guidance.zoo.store import CheckpointError, read_metadata


@pytest.fixture(scope="module")
def zoo():
    return load_zoo()


def test_zoo_loads_with_models_and_metadata(zoo):
    assert zoo.denoiser.learned_variance
    assert zoo.classifier is not None and zoo.noised_clip is not None
    for kind in ("unet", "classifier", "noised_clip", "eval_clip", "eval_classifier"):
        meta = read_metadata(ZOO_DIR / f"{kind}.safetensors")
        assert meta["kind"] == kind
        assert meta["info"]["steps"] > 0 and meta["info"]["dataset_checksum"]
    total = sum(p.stat().st_size for p in ZOO_DIR.glob("*.safetensors"))
    assert total < 100e6, "committed weights must stay under 100 MB"


@pytest.mark.parametrize("name,scale", [("none", 0.0), ("cfg", 3.0), ("classifier", 2.0), ("clip", 2.0)])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_one_guided_step_of_each_kind_with_zoo_models(zoo, name, scale, sampler):
    texts = ["grinning face", "red apple"]
    labels = json.loads((ZOO_DIR / "labels.json").read_text())["identity_names"]
    cond = Conditions(model=zoo.tokenizer(texts), labels=torch.tensor([labels.index(t) for t in texts]),
                      clip_tokens=zoo.clip_tokenizer(texts))
    diffusion = zoo.diffusion.respace("10")
    guidance = make_guidance(name, scale, zoo.guiding_models())
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    if sampler == "ddim":
        out = ddim_step(zoo.denoiser, diffusion, guidance, x, 7, cond)
    else:
        out = ddpm_step(zoo.denoiser, diffusion, guidance, x, 7, cond, noise=torch.zeros_like(x))
    plain = ddim_step(zoo.denoiser, diffusion, make_guidance("none", 0, {}), x, 7, cond) if sampler == "ddim" else \
        ddpm_step(zoo.denoiser, diffusion, make_guidance("none", 0, {}), x, 7, cond, noise=torch.zeros_like(x))
    assert out.x_prev.shape == x.shape and torch.isfinite(out.x_prev).all()
    if name == "none":
        assert torch.equal(out.x_prev, plain.x_prev)
    else:
        assert not torch.allclose(out.x_prev, plain.x_prev), f"{name} guidance changed nothing"


def test_eval_clip_loads_through_open_clip_and_ranks_captions():
    scorer = load_eval_clip()
    import numpy as np

    from guidance.zoo.emoji_data import render_emoji

    try:
        img = render_emoji("\U0001F600", "noto", 32)
    except FileNotFoundError:
        pytest.skip("Noto Color Emoji not installed (apt-get install fonts-noto-color-emoji)")
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        sims = scorer.encode_images(x) @ scorer.encode_texts(["grinning face", "pile of poo", "flag: Japan"]).T
    assert int(sims.argmax()) == 0


def test_missing_truncated_and_mismatched_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    truncated = tmp_path / "unet.safetensors"
    truncated.write_bytes((ZOO_DIR / "unet.safetensors").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(truncated)
    with pytest.raises(CheckpointError, match="expected"):
        load_model(ZOO_DIR / "classifier.safetensors", expected_kind="unet")
    # a directory whose unet file holds a classifier: architecture/kind mismatch named clearly
    bad = tmp_path / "zoo"
    bad.mkdir()
    shutil.copy(ZOO_DIR / "classifier.safetensors", bad / "unet.safetensors")
    with pytest.raises(CheckpointError, match="'classifier' model"):
        load_zoo(bad)
    with pytest.raises(CheckpointError, match="model directory not found"):
        load_zoo(tmp_path / "missing")

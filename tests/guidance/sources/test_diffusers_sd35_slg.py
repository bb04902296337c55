"""SD 3.5's skip-layer guidance: StableDiffusion3Pipeline's `skip_guidance_layers` equals the suite's `slg` with
the same layers, scale and guidance window (float32, CPU).

The pipeline guides eps_u + s_cfg (eps_c - eps_u) + s (eps_c - eps_skip) at steps i with
n * start < i < n * stop (by step index); the suite's slg guides at sigma in (sigma_lo, sigma_hi] (by noise
level), so the test picks the sigmas of the same steps. The transformer is shaped as SD 3.5 medium ships it
(RMS query/key norms, a dual-attention first block). Measured: 2.6e-7 relative on final latents (largest latent 4.6) (10 steps,
s_cfg = 4, s = 2.8, layer 1 of 2, steps 1..4); the bound is 1e-5 relative to the reference's largest value.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from guidance.guiders import make_guidance
from guidance.models import load_bundle
from guidance.samplers import sample

pytest.importorskip("diffusers", reason="diffusers is not installed (the `diffusers` extra)")
pytestmark = pytest.mark.filterwarnings("ignore")

PROMPTS = ["a red cat on a mat", "two dogs"]
STEPS, CFG, SCALE, LAYERS = 10, 4.0, 2.8, [1]
START, STOP = 0.01, 0.5  # the pipeline guides steps i with 0.1 < i < 5: 1..4


def sd35_folder(tiny_pipeline, tmp_path):
    """The tiny SD3 folder with an SD 3.5 medium-shaped transformer (qk_norm rms_norm, dual attention in block 0)."""
    import diffusers

    folder = shutil.copytree(tiny_pipeline("sd3"), tmp_path / "sd35")
    config = dict(diffusers.SD3Transformer2DModel.load_config(str(folder / "transformer")))
    config.update(qk_norm="rms_norm", dual_attention_layers=(0,))
    torch.manual_seed(1)
    shutil.rmtree(folder / "transformer")
    diffusers.SD3Transformer2DModel.from_config(config).save_pretrained(str(folder / "transformer"))
    return folder


def test_skip_guidance_layers_equal_slg(tiny_pipeline, tmp_path):
    bundle = load_bundle(f"diffusers:{sd35_folder(tiny_pipeline, tmp_path)}")
    assert bundle.net.network.config.qk_norm == "rms_norm"
    sigmas = bundle.process.sigmas(STEPS)
    active = [i for i in range(STEPS) if STEPS * START < i < STEPS * STOP]
    assert active == [1, 2, 3, 4]
    slg = make_guidance("slg", SCALE, cfg_scale=CFG, layers=tuple(LAYERS), sigma_lo=sigmas[active[-1] + 1],
                        sigma_hi=sigmas[active[0]])
    x_T = torch.randn(2, *bundle.sample_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = sample(bundle.denoiser, bundle.process, sigmas, slg, bundle.conditions(PROMPTS), bundle.sample_shape,
                      [0, 1], sampler="flow-euler", x_T=x_T, clip_denoised=False)
    call = dict(latents=x_T.clone(), guidance_scale=CFG, num_inference_steps=STEPS, output_type="latent")
    theirs = bundle.pipe(PROMPTS, skip_guidance_layers=LAYERS, skip_layer_guidance_scale=SCALE,
                         skip_layer_guidance_start=START, skip_layer_guidance_stop=STOP, **call).images
    plain = bundle.pipe(PROMPTS, **call).images
    assert (theirs - plain).abs().max() > 1e-3  # the skipped layer steers
    assert float((ours - theirs).abs().max() / max(1.0, float(theirs.abs().max()))) < 1e-5

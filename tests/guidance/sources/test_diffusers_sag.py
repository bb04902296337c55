"""SAG equals diffusers' StableDiffusionSAGPipeline on a tiny SD folder (float32, CPU), with CFG and without.

Both sides: the middle block's first self-attention map on the branch SAG reads (unconditional with CFG),
the mask of tokens attended more than uniformly, x0 blurred there (9 taps, sigma 1), re-noised with that
branch's eps, one more pass. Measured (10 DDIM steps, latents up to |35|): CFG 5 + SAG 0.75: 6.6e-7 relative;
SAG 0.75 alone: 4.4e-7. The bound is 1e-5 relative to the reference's largest value.
"""

from __future__ import annotations

import pytest
import torch

from guidance.guiders import make_guidance
from guidance.models import load_bundle
from guidance.samplers import sample

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (the `diffusers` extra)")
pytestmark = pytest.mark.filterwarnings("ignore")

PROMPTS = ["a red cat on a mat", "two dogs"]
STEPS = 10


def close(ours, theirs) -> float:
    return float((ours - theirs).abs().max() / max(1.0, float(theirs.abs().max())))


@pytest.mark.parametrize(("sag_scale", "cfg_scale"), [(0.75, 5.0), (0.75, 1.0)])
def test_sag_equals_the_pipeline(tiny_pipeline, sag_scale, cfg_scale):
    bundle = load_bundle(f"diffusers:{tiny_pipeline('sd', 'ddim')}")
    pipe = diffusers.StableDiffusionSAGPipeline(**bundle.pipe.components)
    pipe.set_progress_bar_config(disable=True)
    x_T = torch.randn(2, *bundle.sample_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = sample(bundle.denoiser, bundle.process, bundle.process.sigmas(STEPS),
                      make_guidance("sag", sag_scale, cfg_scale=cfg_scale), bundle.conditions(PROMPTS),
                      bundle.sample_shape, [0, 1], sampler="ddim", x_T=x_T, clip_denoised=False)
    call = dict(latents=x_T.clone(), guidance_scale=cfg_scale, num_inference_steps=STEPS, output_type="latent")
    theirs = pipe(PROMPTS, sag_scale=sag_scale, **call).images
    plain = pipe(PROMPTS, sag_scale=0.0, **call).images
    assert close(theirs, plain) > 1e-4  # SAG steers
    assert close(ours, theirs) < 1e-5

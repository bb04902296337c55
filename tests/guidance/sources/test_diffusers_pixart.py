"""PixArt-Sigma pipelines: the suite's samples equal PixArtSigmaPipeline's (float32, CPU, 1 thread) on the tiny
folder with the DPM-Solver config PixArt-Sigma-XL-2-1024-MS ships (guidance.sources.tiny).

Same initial latents on both sides (`latents=x_T`; DPM-Solver's init_noise_sigma is 1), the pipeline's
resolution binning off (it knows no 32 x 32 size) and its T5 length the suite's (the tiny tokenizer's 32).
The bound, 1e-5 of the reference's largest latent, is float32 rounding over the trajectory (measured 5e-7 at
10 steps; see tests/guidance/sources/test_diffusers_parity.py for its origin); a wrong timestep, mask or variance
split is 1e-3 or more.
"""

from __future__ import annotations

import pytest
import torch

from guidance.guiders import make_guidance
from guidance.models import load_bundle
from guidance.samplers import sample

pytest.importorskip("diffusers", reason="diffusers is not installed (the `diffusers` extra)")
pytestmark = pytest.mark.filterwarnings("ignore")

PROMPTS = ["a red cat on a mat", "two dogs"]
STEPS, SCALE = 10, 4.5
BOUND = 1e-5  # float32 rounding over a 10-step trajectory, relative to the latents' largest value


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pixart(tiny_pipeline):
    return load_bundle(f"diffusers:{tiny_pipeline('pixart')}")


def relative(ours, theirs) -> float:
    ours, theirs = torch.as_tensor(ours).float(), torch.as_tensor(theirs).float()
    return float((ours - theirs).abs().max() / theirs.abs().max())


def test_cfg_equals_the_pipeline(pixart):
    assert pixart.family == "pixart" and pixart.default_sampler == "dpmpp-2m" and pixart.prediction == "epsilon"
    assert pixart.net.learned_variance and pixart.sample_shape == (4, 16, 16)
    x_T = torch.randn(2, *pixart.sample_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = sample(pixart.denoiser, pixart.process, pixart.process.sigmas(STEPS), make_guidance("cfg", SCALE),
                      pixart.conditions(PROMPTS), pixart.sample_shape, [0, 1], sampler="dpmpp-2m", x_T=x_T,
                      clip_denoised=False)
    side = pixart.sample_shape[1] * pixart.pipe.vae_scale_factor
    call = dict(latents=x_T.clone(), guidance_scale=SCALE, num_inference_steps=STEPS, height=side, width=side,
                use_resolution_binning=False, max_sequence_length=pixart.net.max_sequence_length)
    theirs = pixart.pipe(PROMPTS, output_type="latent", **call).images
    assert theirs.abs().max() > 0.1
    assert relative(ours, theirs) < BOUND
    images = pixart.pipe(PROMPTS, output_type="np", **call).images
    ours_images = ((pixart.decode(ours) + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert relative(ours_images, images) < BOUND

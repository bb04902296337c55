"""The suite's CFG samples on a diffusers pipeline equal the pipeline's own output (float32, CPU).

Same initial latents on both sides: the suite's x_T (model coordinates, the process's initial scale 1
for VP and flow) is what the pipeline is given as `latents`; the pipeline multiplies it by its
scheduler's init_noise_sigma (1 for DDIM, DPM-Solver and flow Euler; sqrt(sigma_max^2 + 1) for Euler,
which steps in x / alpha) so both start at the same state. DiT's pipeline takes no latents: it draws
them from the generator, which the test draws the same way. Both sides use the GLIDE/diffusers scale
(s = 1: conditional model), and diffusers guides only at s > 1, so the scales here are above 1.

Measured max abs differences (tiny pipelines, 10 steps, s = 5; latents up to |35| under a random UNet):
latents 2.1e-5 (SD DDIM), 1.7e-5 (DPM-Solver++ 2M), 3.4e-5 of |59| (DPM-Solver++ 2M Karras, whose
rounded timesteps the network is told as diffusers does), 2.3e-5 (Euler), 3.8e-6 (SD v-prediction), 1.5e-5
(SDXL), 1.1e-6 (SD3 flow Euler), i.e. <= 7e-7 of the largest latent; decoded images in [0, 1] 3.6e-7 to
1.0e-6 for every family and scheduler, DiT (labels, s = 4) 3.9e-7; guidance_rescale 0.7 in the model's
space 1.5e-5. The bound is 1e-5 relative to the reference's largest magnitude.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from guidance.guiders import make_guidance
from guidance.guiders.cfg_rescale import RescaledCFG, rescale
from guidance.models import load_bundle
from guidance.samplers import sample

pytest.importorskip("diffusers", reason="diffusers is not installed (the `diffusers` extra)")

pytestmark = pytest.mark.filterwarnings("ignore")

PROMPTS = ["a red cat on a mat", "two dogs"]
STEPS, SCALE = 10, 5.0
BOUND = 1e-5  # float32 rounding over a 10-step trajectory, relative to the latents' largest value


def close(ours, theirs) -> float:
    """Largest difference relative to the reference's largest magnitude (at least 1)."""
    ours, theirs = torch.as_tensor(ours), torch.as_tensor(theirs)
    return float((ours - theirs).abs().max() / max(1.0, float(theirs.abs().max())))

CASES = [("sd", "ddim", "ddim"), ("sd", "dpmpp-2m", "dpmpp-2m"), ("sd", "dpmpp-2m-karras", "dpmpp-2m"),
         ("sd", "euler", "euler"), ("sd-v", "ddim", "ddim"),
         ("sdxl", "ddim", "ddim"), ("sd3", "ddim", "flow-euler")]


def initial_latents(bundle, batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, *bundle.sample_shape, generator=torch.Generator().manual_seed(seed))


def suite_latents(bundle, guidance, prompts, x_T, sampler: str) -> torch.Tensor:
    cond = bundle.conditions(prompts)
    with torch.no_grad():
        return sample(bundle.denoiser, bundle.process, bundle.process.sigmas(STEPS), guidance, cond,
                      bundle.sample_shape, list(range(len(x_T))), sampler=sampler, x_T=x_T,
                      clip_denoised=bundle.clip_denoised)


def as_np_images(bundle, latents: torch.Tensor) -> np.ndarray:
    """The bundle's decode ([-1, 1]) as the pipeline's output_type="np" ([0, 1], HWC)."""
    return ((bundle.decode(latents) + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize(("family", "scheduler", "sampler"), CASES)
def test_cfg_equals_the_pipeline(tiny_pipeline, family, scheduler, sampler):
    bundle = load_bundle(f"diffusers:{tiny_pipeline(family, scheduler)}")
    assert bundle.default_sampler == sampler and not bundle.clip_denoised
    x_T = initial_latents(bundle, len(PROMPTS))
    ours = suite_latents(bundle, make_guidance("cfg", SCALE), PROMPTS, x_T, sampler)
    theirs = bundle.pipe(PROMPTS, latents=x_T.clone(), guidance_scale=SCALE, num_inference_steps=STEPS,
                         output_type="latent").images
    assert theirs.abs().max() > 0.1  # a trajectory that went somewhere
    assert close(ours, theirs) < BOUND
    images = bundle.pipe(PROMPTS, latents=x_T.clone(), guidance_scale=SCALE, num_inference_steps=STEPS,
                         output_type="np").images
    assert close(as_np_images(bundle, ours), images) < BOUND


def test_dit_cfg_over_labels_equals_the_pipeline(tiny_pipeline):
    bundle = load_bundle(f"diffusers:{tiny_pipeline('dit')}")
    labels = [3, 998]
    x_T = initial_latents(bundle, 2, seed=7)  # DiTPipeline draws randn(shape, generator) itself
    ours = suite_latents(bundle, make_guidance("cfg", 4.0), ["class 3", "998"], x_T, "ddim")
    images = bundle.pipe(class_labels=labels, guidance_scale=4.0, num_inference_steps=STEPS, output_type="np",
                         generator=torch.Generator().manual_seed(7)).images
    assert close(as_np_images(bundle, ours), images) < BOUND
    other = suite_latents(bundle, make_guidance("cfg", 4.0), ["class 4", "998"], x_T, "ddim")
    assert (other[0] - ours[0]).abs().max() > 1e-3  # the label steers


class ModelSpaceRescale(RescaledCFG):
    """diffusers' guidance_rescale: the same rule on the model's own output (eps for SD) instead of x0."""

    def predict(self, model, x, step, cond):
        pred_c, pred_u = self.branches(model, x, step, cond)
        guided = pred_c.guided_by(pred_u, self.scale_at(step))
        space = guided.primary
        return guided.with_value(space, rescale(guided.get(space), pred_c.get(space), self.phi))


def test_guidance_rescale_in_the_models_space_equals_the_pipeline(tiny_pipeline):
    bundle = load_bundle(f"diffusers:{tiny_pipeline('sd', 'ddim')}")
    x_T = initial_latents(bundle, len(PROMPTS))
    theirs = bundle.pipe(PROMPTS, latents=x_T.clone(), guidance_scale=SCALE, guidance_rescale=0.7,
                         num_inference_steps=STEPS, output_type="latent").images
    ours = suite_latents(bundle, ModelSpaceRescale(SCALE, 0.7), PROMPTS, x_T, "ddim")
    assert close(ours, theirs) < BOUND
    # the suite's cfg-rescale rescales x0 (Lin et al.'s image-space argument): a different rule on eps models
    x0_space = suite_latents(bundle, make_guidance("cfg-rescale", SCALE, phi=0.7), PROMPTS, x_T, "ddim")
    assert close(x0_space, theirs) > 1e-3


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_negative_prompts_equal_the_pipelines(tiny_pipeline, family):
    """A negative prompt replaces the null condition on both sides; in a batch where only some rows have
    one, the others keep the null condition (SDXL's is zeros, which diffusers uses only when no row has a
    negative prompt, so the mixed batch is checked row by row against the suite's own runs)."""
    bundle = load_bundle(f"diffusers:{tiny_pipeline(family, 'ddim')}")
    x_T = initial_latents(bundle, len(PROMPTS))

    def ours(negative):
        with torch.no_grad():
            return sample(bundle.denoiser, bundle.process, bundle.process.sigmas(STEPS), make_guidance("cfg", SCALE),
                          bundle.conditions(PROMPTS, negative=negative), bundle.sample_shape, [0, 1], sampler="ddim",
                          x_T=x_T, clip_denoised=False)

    both = ours(["blurry photo", "dark"])
    theirs = bundle.pipe(PROMPTS, negative_prompt=["blurry photo", "dark"], latents=x_T.clone(), guidance_scale=SCALE,
                         num_inference_steps=STEPS, output_type="latent").images
    assert close(both, theirs) < BOUND
    mixed, plain = ours(["blurry photo", None]), suite_latents(bundle, make_guidance("cfg", SCALE), PROMPTS, x_T, "ddim")
    assert close(mixed[0], both[0]) < BOUND and close(mixed[1], plain[1]) < BOUND
    assert close(mixed[0], plain[0]) > 1e-3  # the negative prompt steers

"""Sana pipelines: the suite's samples equal SanaPipeline's (float32, CPU, 1 thread) on the tiny folder with the
flow DPM-Solver config Sana_1600M_1024px_diffusers ships (guidance.sources.tiny), the complex human
instruction applied to the prompts and not to the negative prompts, as the pipeline applies it.

Same initial latents on both sides (`latents=x_T`), the pipeline's resolution binning off (it would move
32 x 32 to 512 x 512) and its Gemma length the suite's (the tiny tokenizer's 32). The bound, 1e-5 of the
reference's largest latent, is float32 rounding over the trajectory (measured 4e-7 at 10 steps; origin in
tests/guidance/sources/test_diffusers_parity.py); telling the network t * 1000 instead of DPM-Solver's truncated
timestep, or encoding negatives with the instruction, is 1e-3 or more.
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
NEGATIVE = ["blurry", "dark"]
STEPS, SCALE = 10, 4.5
BOUND = 1e-5  # float32 rounding over a 10-step trajectory, relative to the latents' largest value


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sana(tiny_pipeline):
    return load_bundle(f"diffusers:{tiny_pipeline('sana')}")


def relative(ours, theirs) -> float:
    ours, theirs = torch.as_tensor(ours).float(), torch.as_tensor(theirs).float()
    return float((ours - theirs).abs().max() / theirs.abs().max())


def run(bundle, negative=None) -> tuple[torch.Tensor, torch.Tensor]:
    x_T = torch.randn(2, *bundle.sample_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return sample(bundle.denoiser, bundle.process, bundle.process.sigmas(STEPS), make_guidance("cfg", SCALE),
                      bundle.conditions(PROMPTS, negative=negative), bundle.sample_shape, [0, 1], sampler="dpmpp-2m",
                      x_T=x_T, clip_denoised=False), x_T


def pipeline(bundle, x_T, **kwargs):
    side = bundle.sample_shape[1] * bundle.pipe.vae_scale_factor
    return bundle.pipe(PROMPTS, latents=x_T.clone(), guidance_scale=SCALE, num_inference_steps=STEPS, height=side,
                       width=side, use_resolution_binning=False, max_sequence_length=bundle.net.max_sequence_length,
                       **kwargs).images


def test_the_folder_maps_onto_a_flow_with_the_schedulers_timesteps(sana):
    assert sana.family == "sana" and sana.default_sampler == "dpmpp-2m" and sana.prediction == "flow"
    assert sana.sample_shape == (32, 16, 16) and not sana.net.learned_variance
    sigmas = sana.process.sigmas(STEPS)
    first = sana.process.level(sigmas[0])
    # DPM-Solver's flow sigmas: 1 - linspace(1, 1 / 1000, n + 1), shifted by flow_shift 3 (kept in float32: to 1e-4),
    # and the network told t * 1000 truncated
    t = 3 * 0.999 / (1 + 2 * 0.999)
    assert first.sigma == pytest.approx(t / (1 - t), rel=1e-4) and first.model_t == int(t * 1000) and sigmas[-1] == 0.0


def test_cfg_equals_the_pipeline(sana):
    ours, x_T = run(sana)
    theirs = pipeline(sana, x_T, output_type="latent")
    assert theirs.abs().max() > 0.1
    assert relative(ours, theirs) < BOUND
    images = pipeline(sana, x_T, output_type="np")
    ours_images = ((sana.decode(ours) + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert relative(ours_images, images) < BOUND


def test_negative_prompts_are_encoded_without_the_instruction_as_the_pipeline_does(sana):
    ours, x_T = run(sana, NEGATIVE)
    theirs = pipeline(sana, x_T, negative_prompt=NEGATIVE, output_type="latent")
    assert relative(ours, theirs) < BOUND
    assert relative(run(sana)[0], theirs) > 1e-3  # the negative prompt steers

"""FLUX.1 pipelines: the suite's samples equal FluxPipeline's (float32, CPU), for the distilled guidance (one pass,
its strength the transformer's input) and for true CFG with a negative prompt on top of it.

Same initial latents on both sides: the suite's x_T ([16, H, W], unpacked) is given to the pipeline packed
(`latents=pack(x_T)`; packing is a permutation). The trajectory is the pipeline's (sigmas linspace(1, 1/n, n)
shifted by mu from the image sequence length); the decoded images use the VAE's scaling and shift factors.
Measured (tiny FLUX, 4 steps, latents up to |5|): distilled guidance 5.0 exact (0.0);
true CFG 4 with negative prompts 2.9e-7 relative. The bound is 1e-5 relative to the reference's largest value.
"""

from __future__ import annotations

import pytest
import torch

from bench.runner.config import BenchConfig
from bench.runner.store import load_prompt_set
from bench.runner.applicability import applicable_guidance
from guidance.guiders import make_guidance
from guidance.models import load_bundle
from guidance.samplers import sample

pytest.importorskip("diffusers", reason="diffusers is not installed (the `diffusers` extra)")

from guidance.sources.flux import FLUX_GUIDANCE, pack, unpack  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")

PROMPTS = ["a red cat on a mat", "two dogs"]
NEGATIVE = ["blurry", "dark"]
STEPS = 4
BOUND = 1e-5  # float32 rounding over the trajectory, relative to the latents' largest value


def close(ours, theirs) -> float:
    return float((ours - theirs).abs().max() / max(1.0, float(theirs.abs().max())))


@pytest.fixture(scope="module")
def flux(tiny_pipeline):
    return load_bundle(f"diffusers:{tiny_pipeline('flux')}")


def run(bundle, guidance, negative=None) -> torch.Tensor:
    x_T = torch.randn(2, *bundle.sample_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return sample(bundle.denoiser, bundle.process, bundle.process.sigmas(STEPS), guidance,
                      bundle.conditions(PROMPTS, negative=negative), bundle.sample_shape, [0, 1], sampler="flow-euler",
                      x_T=x_T, clip_denoised=False), x_T


def pipeline(bundle, x_T, **kwargs) -> torch.Tensor:
    side = bundle.sample_shape[1] * bundle.pipe.vae_scale_factor
    return bundle.pipe(PROMPTS, latents=pack(x_T), height=side, width=side, num_inference_steps=STEPS,
                       max_sequence_length=bundle.net.max_sequence_length, **kwargs).images


def test_flux_folder_maps_onto_the_suite(flux):
    assert flux.sample_shape == (16, 16, 16) and flux.default_sampler == "flow-euler" and flux.embedded_guidance
    assert flux.decoder.shift == pytest.approx(0.1159) and flux.decoder.scaling == pytest.approx(0.3611)
    x = torch.randn(2, 16, 6, 4)
    assert torch.equal(unpack(pack(x), 6, 4), x)
    # mu from 64 image tokens as FluxPipeline computes it; the trajectory's first sigma is pure noise
    assert flux.process.mu == pytest.approx(64 * 0.65 / 3840 + 0.5 - 256 * 0.65 / 3840)
    assert flux.process.sigmas(STEPS)[0] == float("inf") and len(flux.process.sigmas(STEPS)) == STEPS + 1


def test_distilled_guidance_equals_the_pipeline(flux):
    strength = 5.0  # not the default 3.5 that the conditions carry: the method sets the input
    ours, x_T = run(flux, make_guidance("flux-distilled", strength))
    theirs = pipeline(flux, x_T, guidance_scale=strength, output_type="latent")
    assert theirs.abs().max() > 0.1
    assert close(pack(ours), theirs) < BOUND
    images = pipeline(flux, x_T, guidance_scale=strength, output_type="np")
    ours_images = ((flux.decode(ours) + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert close(torch.as_tensor(ours_images), torch.as_tensor(images)) < BOUND
    assert flux.denoiser is not None and make_guidance("flux-distilled", strength).cost().network_passes == 1


def test_true_cfg_with_negative_prompts_equals_the_pipeline(flux):
    ours, x_T = run(flux, make_guidance("cfg", 4.0), NEGATIVE)
    theirs = pipeline(flux, x_T, negative_prompt=NEGATIVE, true_cfg_scale=4.0, guidance_scale=FLUX_GUIDANCE,
                      output_type="latent")
    assert close(pack(ours), theirs) < BOUND
    plain = pipeline(flux, x_T, guidance_scale=FLUX_GUIDANCE, output_type="latent")
    assert close(theirs, plain) > 1e-3  # the negative prompt steers


def test_nag_and_the_cfg_family_run_on_flux(flux):
    plain, _ = run(flux, make_guidance("cfg", 1.0))
    for name, scale in (("nag", 3.0), ("apg", 4.0)):
        out, _ = run(flux, make_guidance(name, scale), NEGATIVE)
        assert torch.isfinite(out).all() and (out - plain).abs().max() > 1e-4, name


def test_guidance_all_runs_what_each_pipeline_can(tiny_pipeline, flux, tmp_path):
    """flux-distilled only where the transformer embeds the strength; nag wherever a prompt is attended to."""
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("a red cat\ntwo dogs\n")
    every = BenchConfig.from_preset("tiny", guidance=["all"], prompts=str(prompts_file))
    prompts = load_prompt_set(every)

    def names(bundle) -> set[str]:
        return set(applicable_guidance(every, prompts, bundle, note=lambda _: None).guidance)

    assert {"flux-distilled", "nag", "cfg", "slg"} <= names(flux)
    sd = names(load_bundle(f"diffusers:{tiny_pipeline('sd')}"))
    assert "nag" in sd and "flux-distilled" not in sd
    assert not {"nag", "flux-distilled"} & names(load_bundle(f"diffusers:{tiny_pipeline('dit')}"))

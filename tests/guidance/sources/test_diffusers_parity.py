"""The suite's samples on a diffusers pipeline equal the pipeline's own output (float32, CPU, 1 thread).

The tiny pipelines carry the scheduler configs the public checkpoints ship (guidance.sources.tiny:
SD 1.5's PNDM, SD 2.1's v-prediction DDIM with set_alpha_to_one false, SDXL's leading Euler, SD3's
shifted flow Euler, DiT's linear-table DDIM), and each is also run with DDIM, Euler and DPM-Solver++ 2M
(and Karras) swapped in as diffusers users do: `pipe.scheduler = X.from_config(pipe.scheduler.config)`
on diffusers' side, `load_bundle(folder, sampler=x)` (the CLI's --sampler x) on the suite's; SD3 also
with use_dynamic_shifting.

Same initial latents on both sides: the pipeline is given `latents=x_T` and multiplies it by its
scheduler's init_noise_sigma; the suite starts from x_T times its process's initial scale, the same
state in model coordinates (1 for DDIM, DPM-Solver and flow Euler; for Euler, which steps in x / alpha,
init_noise_sigma / sqrt(1 + sigma_max^2): 1 with leading spacing, below 1 with linspace or trailing,
where diffusers takes init_noise_sigma = sigma_max). The reproducibility mode draws them from the
per-sample CPU generators instead, and DiT (which takes no latents) is compared that way. Both sides use the GLIDE/diffusers scale (s = 1: the
conditional model); diffusers guides only at s > 1, so the scales here are above 1.

Tolerance: 1e-5 of the reference's largest latent. Its origin: both sides run the same float32 network
calls in another order of float32 operations (the suite mixes the guided prediction in its own space and
steps in float64 coefficients, diffusers in float32), which leaves differences of float32 rounding
accumulated over 10 steps, measured 4e-8 to 2e-6 of the largest latent (the table in docs/diffusers.md);
changing the thread count alone changes latents by ~6e-5 (different GEMM blocking), so both sides run on
one thread (pinned below). A real mismatch (a trajectory ending at another sigma, rescale in another space,
other timesteps) is 1e-3 or more.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from guidance.guiders import make_guidance
from guidance.models import load_bundle
from guidance.rng import sample_seed
from guidance.samplers import sample
from guidance.sources.schedule import SAMPLER_OF
from guidance.sources.tiny import SWAPS

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (the `diffusers` extra)")

pytestmark = pytest.mark.filterwarnings("ignore")

PROMPTS = ["a red cat on a mat", "two dogs"]
STEPS, SCALE = 10, 5.0
BOUND = 1e-5  # float32 rounding over a 10-step trajectory, relative to the latents' largest value (see above)
MEASURED: dict[str, float] = {}  # case -> relative difference, printed at the end (pytest -s) for the docs' table

# (family, the folder's scheduler, the scheduler swapped in on both sides): None keeps the folder's own
CASES = [("sd", "shipped", "ddim"), ("sd", "shipped", "euler"), ("sd", "shipped", "dpmpp-2m"),
         ("sd", "dpmpp-2m-karras", None), ("sd", "euler-karras", None),
         ("sd-v", "shipped", None), ("sd-v", "shipped", "euler"), ("sd-v", "shipped", "dpmpp-2m"),
         ("sdxl", "shipped", None), ("sdxl", "shipped", "ddim"), ("sdxl", "shipped", "dpmpp-2m"),
         ("sd3", "shipped", None), ("sd3", "flow-dynamic", None)]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The same thread count on both sides (other counts reorder float32 sums: ~6e-5 relative)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    if MEASURED:
        print("\n" + "\n".join(f"{case}: {rel:.1e}" for case, rel in MEASURED.items()))


def relative(ours, theirs) -> float:
    """Largest difference relative to the reference's largest magnitude."""
    ours, theirs = torch.as_tensor(ours).float(), torch.as_tensor(theirs).float()
    return float((ours - theirs).abs().max() / theirs.abs().max())


def swap(pipe, kind: str | None) -> str | None:
    """Swap diffusers' scheduler as its users do; returns the suite's --sampler for it (None: the folder's)."""
    if kind is None:
        return None
    name, overrides = SWAPS[kind]
    pipe.scheduler = getattr(diffusers, name).from_config(pipe.scheduler.config, **overrides)
    return SAMPLER_OF[name]


def initial_latents(bundle, batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, *bundle.sample_shape, generator=torch.Generator().manual_seed(seed))


def suite_latents(bundle, guidance, prompts, x_T, **options) -> torch.Tensor:
    """The suite's samples from the pipeline's `latents=x_T` (scaled as the pipeline scales it: see
    PipelineVP.initial_scale)."""
    cond = bundle.conditions(prompts, **options)
    sigmas = bundle.process.sigmas(STEPS)
    scale = bundle.process.initial_scale(bundle.process.level(sigmas[0]))
    with torch.no_grad():
        return sample(bundle.denoiser, bundle.process, sigmas, guidance, cond, bundle.sample_shape,
                      list(range(len(x_T))), sampler=bundle.sampler, x_T=x_T * scale,
                      clip_denoised=bundle.clip_denoised)


def loaded(folder, sampler: str | None):
    bundle = load_bundle(f"diffusers:{folder}", sampler=sampler)
    bundle.sampler = sampler or bundle.default_sampler
    return bundle


def as_np_images(bundle, latents: torch.Tensor) -> np.ndarray:
    """The bundle's decode ([-1, 1]) as the pipeline's output_type="np" ([0, 1], HWC)."""
    return ((bundle.decode(latents) + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize(("family", "folder", "swapped"), CASES)
def test_cfg_equals_the_pipeline(tiny_pipeline, family, folder, swapped):
    path = tiny_pipeline(family, folder)
    pipe = load_bundle(f"diffusers:{path}").pipe
    bundle = loaded(path, swap(pipe, swapped))
    x_T = initial_latents(bundle, len(PROMPTS))
    ours = suite_latents(bundle, make_guidance("cfg", SCALE), PROMPTS, x_T)
    theirs = pipe(PROMPTS, latents=x_T.clone(), guidance_scale=SCALE, num_inference_steps=STEPS,
                  output_type="latent").images
    assert theirs.abs().max() > 0.1  # a trajectory that went somewhere
    MEASURED[f"{family} {folder} {swapped or ''}".strip()] = rel = relative(ours, theirs)
    assert rel < BOUND
    if swapped is None:  # decoding is the same VAE call whatever the scheduler: checked once per folder
        images = pipe(PROMPTS, latents=x_T.clone(), guidance_scale=SCALE, num_inference_steps=STEPS,
                      output_type="np").images
        assert relative(as_np_images(bundle, ours), images) < BOUND


def test_a_trajectory_ends_where_the_scheduler_ends(tiny_pipeline):
    """SD 2.1's DDIM (set_alpha_to_one false) ends at abar_0, not at sigma 0; SD 1.5's PNDM config runs as
    DDIMScheduler.from_config (the suite has no PLMS), SDXL's Euler and DiT's DDIM (set_alpha_to_one true) at 0."""
    sd_v = loaded(tiny_pipeline("sd-v"), None)
    abar_0 = float(sd_v.pipe.scheduler.alphas_cumprod[0])
    assert sd_v.process.sigmas(STEPS)[-1] == pytest.approx(((1 - abar_0) / abar_0) ** 0.5, rel=1e-6)
    assert sd_v.process.sigmas(STEPS)[-2] == pytest.approx(sd_v.process.timestep_sigma(1))  # leading, steps_offset 1
    assert loaded(tiny_pipeline("sd"), None).default_sampler == "ddim"
    assert loaded(tiny_pipeline("sdxl"), None).process.sigmas(STEPS)[-1] == 0.0
    assert loaded(tiny_pipeline("dit"), None).process.sigmas(STEPS)[-1] == 0.0


def test_unsupported_scheduler_fields_are_refused_in_one_line(tiny_pipeline, tmp_path):
    import json
    import shutil

    folder = shutil.copytree(tiny_pipeline("sd-v"), tmp_path / "sd-v")
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "thresholding": True}))
    with pytest.raises(ValueError, match="thresholding=True, which the suite does not reproduce") as err:
        load_bundle(f"diffusers:{folder}")
    assert "\n" not in str(err.value)
    config_path.write_text(json.dumps({**config, "timestep_spacing": "linspace"}))
    with pytest.raises(ValueError, match="no trajectory reproduces"):  # DDIM jumps t - T // n, not to the next t
        load_bundle(f"diffusers:{folder}").process.sigmas(STEPS)
    config_path.write_text(json.dumps({**config, "timestep_spacing": "trailing"}))
    assert len(load_bundle(f"diffusers:{folder}").process.sigmas(STEPS)) == STEPS + 1  # 999 .. 99, then abar_0


def test_guidance_rescale_in_the_models_space_equals_the_pipeline(tiny_pipeline):
    """cfg-rescale with rescale_space="model" is diffusers' guidance_rescale, on eps (SD 1.x) and v (SD 2.x)."""
    for family in ("sd", "sd-v"):
        path = tiny_pipeline(family)
        bundle = loaded(path, "ddim")
        pipe = bundle.pipe
        swap(pipe, "ddim")
        x_T = initial_latents(bundle, len(PROMPTS))
        theirs = pipe(PROMPTS, latents=x_T.clone(), guidance_scale=SCALE, guidance_rescale=0.7,
                      num_inference_steps=STEPS, output_type="latent").images
        ours = suite_latents(bundle, make_guidance("cfg-rescale", SCALE, phi=0.7, rescale_space="model"), PROMPTS, x_T)
        MEASURED[f"{family} guidance_rescale 0.7"] = rel = relative(ours, theirs)
        assert rel < BOUND
        # the default rescales x0 (Lin et al.'s image-space argument): a different rule on eps and v models
        x0_space = suite_latents(bundle, make_guidance("cfg-rescale", SCALE, phi=0.7), PROMPTS, x_T)
        assert relative(x0_space, theirs) > 1e-3


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_negative_prompts_equal_the_pipelines(tiny_pipeline, family):
    """A negative prompt replaces the null condition on both sides; in a batch where only some rows have
    one, the others keep the null condition (SDXL's is zeros, which diffusers uses only when no row has a
    negative prompt, so the mixed batch is checked row by row against the suite's own runs)."""
    bundle = loaded(tiny_pipeline(family), None)
    if family == "sd":
        swap(bundle.pipe, "ddim")  # SD 1.5 ships PNDM, which the suite runs as DDIMScheduler.from_config
    x_T = initial_latents(bundle, len(PROMPTS))
    cfg = make_guidance("cfg", SCALE)
    both = suite_latents(bundle, cfg, PROMPTS, x_T, negative=["blurry photo", "dark"])
    theirs = bundle.pipe(PROMPTS, negative_prompt=["blurry photo", "dark"], latents=x_T.clone(), guidance_scale=SCALE,
                         num_inference_steps=STEPS, output_type="latent").images
    MEASURED[f"{family} negative prompts"] = rel = relative(both, theirs)
    assert rel < BOUND
    mixed = suite_latents(bundle, cfg, PROMPTS, x_T, negative=["blurry photo", None])
    plain = suite_latents(bundle, cfg, PROMPTS, x_T)
    assert relative(mixed[0], both[0]) < BOUND and relative(mixed[1], plain[1]) < BOUND
    assert relative(mixed[0], plain[0]) > 1e-3  # the negative prompt steers


@pytest.mark.parametrize(("family", "swapped"), [("sd", "ddim"), ("dit", None), ("dit", "dpmpp-2m")])
def test_the_reproducibility_mode_is_diffusers_per_sample_generator(tiny_pipeline, family, swapped):
    """--noise diffusers: sample k of seed set `seed` is `pipe(prompt_k, generator=torch.Generator("cpu")
    .manual_seed(sample_seed(seed, k)))`, one call per sample (DiT: its class label, null class 1000 and
    [cond, null] batch, as DiTPipeline builds them)."""
    path = tiny_pipeline(family)
    pipe = load_bundle(f"diffusers:{path}").pipe
    bundle = loaded(path, swap(pipe, swapped))
    seed, indices = 3, [5, 12]
    texts = ["class 3", "998"] if family == "dit" else PROMPTS
    with torch.no_grad():
        ours = sample(bundle.denoiser, bundle.process, bundle.process.sigmas(STEPS), make_guidance("cfg", 4.0),
                      bundle.conditions(texts), bundle.sample_shape, indices, seed=seed, sampler=bundle.sampler,
                      clip_denoised=False, noise_mode="diffusers")
    for row, (k, text) in enumerate(zip(indices, texts)):
        generator = torch.Generator("cpu").manual_seed(sample_seed(seed, k))
        if family == "dit":
            label = bundle.net.label_of(text)
            theirs = pipe(class_labels=[label], guidance_scale=4.0, num_inference_steps=STEPS, generator=generator,
                          output_type="np").images
            MEASURED[f"dit {swapped or 'shipped'} reproducibility mode (images)"] = rel = \
                relative(as_np_images(bundle, ours[row:row + 1]), theirs)
        else:
            theirs = pipe(text, guidance_scale=4.0, num_inference_steps=STEPS, generator=generator,
                          output_type="latent").images
            MEASURED[f"{family} {swapped} reproducibility mode"] = rel = relative(ours[row:row + 1], theirs)
        assert rel < BOUND

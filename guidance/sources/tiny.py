"""Tiny random-weight diffusers pipelines, written offline from configs (no download).

One per family the diffusers source supports (sd, sd-v, sdxl, sd3, dit, flux, pixart, sana), each a folder exactly as
`save_pipeline(...)`/`save_pretrained` writes it, so the parity tests, the benchmark and a reader
without weights can run the whole path on the CPU. The scheduler (and pipeline) configs are those the
public checkpoints ship, field by field with their source (SHIPPED_SCHEDULERS), or a scheduler swapped
in from them as diffusers users do (SWAPS): only the networks are tiny. The CLIP tokenizer is a byte-level vocabulary
(every byte alone and word-final, no merges) written here: it tokenises any text, just not compactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import open_clip
import torch

from guidance.checkpoints import save_model
from guidance.sources import GUIDING_CLIP
from guidance.sources.tiny_flux import LATENT_CHANNELS as FLUX_CHANNELS
from guidance.sources.tiny_flux import build_flux
from guidance.sources.tiny_pixart import VAE_SCALING as PIXART_SCALING
from guidance.sources.tiny_pixart import build_pixart
from guidance.sources.tiny_sana import build_sana

FAMILIES = ("sd", "sd-v", "sdxl", "sd3", "dit", "flux", "pixart", "sana")
OWN_TOKENIZER = ("dit", "pixart", "sana")  # no CLIP tokenizer written: none (DiT) or the pipeline's T5 / Gemma one

# scheduler/scheduler_config.json as each public checkpoint ships it, field by field (only `_diffusers_version`
# left out), so that the tiny pipelines meet the configs users load. Where each was read:
SHIPPED_SCHEDULERS: dict[str, dict[str, Any]] = {
    # runwayml/stable-diffusion-v1-5 (308 bytes, diffusers 0.6.0): PLMS. The same file in its mirrors, e.g.
    # huggingface.co/Kardbord/stable-diffusion-v1-5-unsafe/blob/41ba35e/scheduler/scheduler_config.json, and as
    # diffusers' docs print `pipeline.scheduler` (using-diffusers/schedulers) for that repository.
    "sd": {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
           "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
           "trained_betas": None, "clip_sample": False},
    # stabilityai/stable-diffusion-2-1 (diffusers 0.8.0): DDIM, v-prediction, leading spacing (DDIM's default).
    # huggingface.co/SfinOe/stable-diffusion-v2-1/blob/main/scheduler/scheduler_config.json (a copy of the repo);
    # the repo's URL is cited with the same values by huggingface/candle's stable_diffusion v2_1 config
    "sd-v": {"_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
             "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
             "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None},
    # stabilityai/stable-diffusion-xl-base-1.0 (diffusers 0.19.0.dev0): Euler, leading spacing.
    # huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/blob/refs%2Fpr%2F94/scheduler/scheduler_config.json
    "sdxl": {"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear", "num_train_timesteps": 1000,
             "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True,
             "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False},
    # stabilityai/stable-diffusion-3-medium-diffusers (diffusers 0.29.0.dev0): flow Euler with a fixed shift.
    # huggingface.co/Hydrahost/stable-diffusion-3-medium-diffusers/blob/main/scheduler/scheduler_config.json (a copy)
    "sd3": {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0},
    # facebook/DiT-XL-2-256 (310 bytes, diffusers 0.12.0.dev0): DDIM on the linear table, set_alpha_to_one true.
    # huggingface.co/facebook/DiT-XL-2-256/tree/main/scheduler lists the file; its fields as public DiT code quotes
    # them (e.g. a DiT DeepCache script's get_scheduler_config), which JSON-dump to exactly those 310 bytes
    "dit": {"_class_name": "DDIMScheduler", "beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001,
            "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": True,
            "steps_offset": 0, "trained_betas": None},
    # PixArt-alpha/PixArt-Sigma-XL-2-1024-MS: DPM-Solver++ 2M, eps, linspace spacing, on the linear table. Written
    # by diffusers' scripts/convert_pixart_sigma_to_diffusers.py as `DPMSolverMultistepScheduler()`, so every field
    # is that class's default (as the diffusers release that saved it listed them)
    "pixart": {"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++", "beta_end": 0.02,
               "beta_schedule": "linear", "beta_start": 0.0001, "dynamic_thresholding_ratio": 0.995,
               "euler_at_final": False, "final_sigmas_type": "zero", "lambda_min_clipped": float("-inf"),
               "lower_order_final": True, "num_train_timesteps": 1000, "prediction_type": "epsilon",
               "rescale_betas_zero_snr": False, "sample_max_value": 1.0, "solver_order": 2, "solver_type": "midpoint",
               "steps_offset": 0, "thresholding": False, "timestep_spacing": "linspace", "trained_betas": None,
               "use_karras_sigmas": False, "use_lu_lambdas": False, "variance_type": None},
    # Efficient-Large-Model/Sana_1600M_1024px_diffusers: flow DPM-Solver++ 2M (use_flow_sigmas, flow_shift 3,
    # flow_prediction). Written by diffusers' scripts/convert_sana_to_diffusers.py (its default scheduler_type
    # flow-dpm_solver: `DPMSolverMultistepScheduler(flow_shift=3.0, use_flow_sigmas=True,
    # prediction_type="flow_prediction")` below 4096 px), every other field the class's default
    "sana": {"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++", "beta_end": 0.02,
             "beta_schedule": "linear", "beta_start": 0.0001, "dynamic_thresholding_ratio": 0.995,
             "euler_at_final": False, "final_sigmas_type": "zero", "flow_shift": 3.0,
             "lambda_min_clipped": float("-inf"), "lower_order_final": True, "num_train_timesteps": 1000,
             "prediction_type": "flow_prediction", "rescale_betas_zero_snr": False, "sample_max_value": 1.0,
             "solver_order": 2, "solver_type": "midpoint", "steps_offset": 0, "thresholding": False,
             "timestep_spacing": "linspace", "trained_betas": None, "use_beta_sigmas": False,
             "use_exponential_sigmas": False, "use_flow_sigmas": True, "use_karras_sigmas": False,
             "use_lu_lambdas": False, "variance_type": None},
}
# model_index.json fields the pipelines ship besides their components (SDXL base: huggingface.co/stabilityai/
# stable-diffusion-xl-base-1.0 model_index.json; DiT's id2label is written by save_pipeline)
SHIPPED_PIPELINES: dict[str, dict[str, Any]] = {"sdxl": {"force_zeros_for_empty_prompt": True}}
# the scheduler a tiny pipeline is saved with: its checkpoint's own, or one swapped in as a diffusers user does,
# `XScheduler.from_config(shipped, **overrides)`
SWAPS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}), "euler": ("EulerDiscreteScheduler", {}),
    "euler-karras": ("EulerDiscreteScheduler", {"use_karras_sigmas": True}),
    "dpmpp-2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp-2m-karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "flow-dynamic": ("FlowMatchEulerDiscreteScheduler", {"use_dynamic_shifting": True})}
SCHEDULERS = ("shipped", *SWAPS)
TEXT_DIM = 32  # hidden size of the tiny CLIP text encoders
LATENT = 16  # latent side: the VAE below upsamples by 2, so images are 32 x 32 (the zoo's size)
NUM_CLASSES = 1000  # DiT's pipeline hard-codes the null class as 1000


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for every byte (what CLIP's BPE vocabulary is written in)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_clip_tokenizer(folder: Path, max_length: int = 77) -> int:
    """A CLIP BPE tokenizer with a byte-level vocabulary; returns its vocabulary size."""
    from transformers import CLIPTokenizer  # noqa: PLC0415 (optional dependency)

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab |= {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)
    tok.save_pretrained(str(folder))
    return len(vocab)


def clip_text_config(vocab_size: int, hidden: int = TEXT_DIM, projection: int | None = None):  # noqa: ANN201
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=77, bos_token_id=vocab_size - 2,
                          eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1, projection_dim=projection or hidden,
                          hidden_act="gelu")


def tiny_vae(latent_channels: int = 4, scaling_factor: float = 0.18215, shift_factor: float | None = None):  # noqa: ANN201
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                         latent_channels=latent_channels, norm_num_groups=4, sample_size=2 * LATENT,
                         scaling_factor=scaling_factor, shift_factor=shift_factor)


def scheduler_of(family: str, kind: str = "shipped"):  # noqa: ANN201
    """`family`'s checkpoint scheduler as shipped, or `kind` swapped in from the loaded scheduler's config
    (`X.from_config(pipe.scheduler.config)`, which carries the shipped class's defaults, e.g. PNDM's leading)."""
    import diffusers  # noqa: PLC0415 (optional dependency)

    shipped = SHIPPED_SCHEDULERS[family]
    scheduler = getattr(diffusers, shipped["_class_name"]).from_config(shipped)
    if kind == "shipped":
        return scheduler
    if kind not in SWAPS:
        raise ValueError(f"unknown tiny scheduler {kind!r}; valid: {', '.join(SCHEDULERS)}")
    name, overrides = SWAPS[kind]
    return getattr(diffusers, name).from_config(scheduler.config, **overrides)


def build(family: str, scheduler: str = "shipped", seed: int = 0, tokenizer_dir: Path | None = None):  # noqa: ANN201
    """The tiny pipeline object of `family` with random weights (seeded)."""
    import diffusers  # noqa: PLC0415 (optional dependency)
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: PLC0415 (optional dependency)

    if family not in FAMILIES:
        raise ValueError(f"unknown tiny pipeline family {family!r}; valid: {', '.join(FAMILIES)}")
    torch.manual_seed(seed)
    vocab = write_clip_tokenizer(tokenizer_dir) if tokenizer_dir is not None else None
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir)) if tokenizer_dir is not None else None
    if family in ("sd", "sd-v"):
        unet = diffusers.UNet2DConditionModel(
            sample_size=LATENT, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TEXT_DIM, attention_head_dim=4, norm_num_groups=8)
        return diffusers.StableDiffusionPipeline(
            vae=tiny_vae(), text_encoder=CLIPTextModel(clip_text_config(vocab)), tokenizer=tokenizer, unet=unet,
            scheduler=scheduler_of(family, scheduler),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if family == "sdxl":
        unet = diffusers.UNet2DConditionModel(
            sample_size=LATENT, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=2 * TEXT_DIM, attention_head_dim=(2, 4), norm_num_groups=8, use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
            projection_class_embeddings_input_dim=TEXT_DIM + 6 * 8)
        return diffusers.StableDiffusionXLPipeline(
            vae=tiny_vae(scaling_factor=0.13025), text_encoder=CLIPTextModel(clip_text_config(vocab)),
            text_encoder_2=CLIPTextModelWithProjection(clip_text_config(vocab)), tokenizer=tokenizer,
            tokenizer_2=tokenizer, unet=unet, scheduler=scheduler_of(family, scheduler), **SHIPPED_PIPELINES["sdxl"])
    if family == "flux":
        vae = tiny_vae(FLUX_CHANNELS, scaling_factor=0.3611, shift_factor=0.1159)
        return build_flux(tokenizer, clip_text_config(vocab), dict(vae.config), LATENT)
    if family == "pixart":
        return build_pixart(tiny_vae(scaling_factor=PIXART_SCALING), scheduler_of(family, scheduler), LATENT)
    if family == "sana":
        return build_sana(scheduler_of(family, scheduler), LATENT)
    if family == "sd3":
        transformer = diffusers.SD3Transformer2DModel(
            sample_size=LATENT, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=2 * TEXT_DIM, caption_projection_dim=16,
            pooled_projection_dim=2 * TEXT_DIM, pos_embed_max_size=LATENT)
        clip = lambda: CLIPTextModelWithProjection(clip_text_config(vocab))  # noqa: E731
        return diffusers.StableDiffusion3Pipeline(
            transformer=transformer, scheduler=scheduler_of(family, "shipped"),
            vae=tiny_vae(scaling_factor=1.5305, shift_factor=0.0609), text_encoder=clip(), tokenizer=tokenizer,
            text_encoder_2=clip(), tokenizer_2=tokenizer, text_encoder_3=None, tokenizer_3=None)
    transformer = diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2, sample_size=LATENT,
        patch_size=2, num_embeds_ada_norm=NUM_CLASSES, norm_type="ada_norm_zero")
    return diffusers.DiTPipeline(transformer=transformer, vae=tiny_vae(), scheduler=scheduler_of(family, scheduler),
                                 id2label={i: f"class {i}" for i in range(NUM_CLASSES)})


def swap_scheduler(folder: str | Path, family: str, kind: str) -> Path:
    """Give a saved tiny pipeline another scheduler (`kind` of SCHEDULERS) in place: scheduler/ and the
    model_index.json entry that names its class, as save_pretrained would write them."""
    folder = Path(folder)
    scheduler = scheduler_of(family, kind)
    scheduler.save_config(str(folder / "scheduler"))
    index = json.loads((folder / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", type(scheduler).__name__]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def save_guiding_clip(path: Path, seed: int = 0) -> None:
    """A tiny random open_clip model in the zoo's format (config in the file), as universal-clip's guide."""
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    torch.manual_seed(seed + 1)
    model = open_clip.model.CLIP(**cfg)
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "size": 32}
    save_model(model, path, "eval_clip", {"model_cfg": cfg, "preprocess_cfg": preprocess}, half=False)


def save_pipeline(folder: str | Path, family: str = "sd", scheduler: str = "shipped", seed: int = 0,
                  guiding_clip: bool = True) -> Path:
    """Write a tiny random `family` pipeline to `folder` (safetensors, as save_pretrained writes it), with
    a tiny guiding CLIP for universal-clip beside it unless `guiding_clip` is False."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe = build(family, scheduler, seed, None if family in OWN_TOKENIZER else folder / "tokenizer")
    pipe.save_pretrained(str(folder), safe_serialization=True)
    if family == "dit":  # DiTPipeline does not record its labels; real DiT folders carry them in model_index.json
        index = json.loads((folder / "model_index.json").read_text())
        index["id2label"] = {str(i): f"class {i}" for i in range(NUM_CLASSES)}
        (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    if guiding_clip:
        save_guiding_clip(folder / GUIDING_CLIP, seed)
    return folder

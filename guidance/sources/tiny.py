"""Tiny random-weight diffusers pipelines, written offline from configs (no download).

One per family the diffusers source supports (sd, sd-v, sdxl, sd3, dit), each a folder exactly as
`save_pipeline(...)`/`save_pretrained` writes it, so the parity tests, the benchmark and a reader
without weights can run the whole path on the CPU. The CLIP tokenizer is a byte-level vocabulary
(every byte alone and word-final, no merges) written here: it tokenises any text, just not compactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from guidance.sources import GUIDING_CLIP
from guidance.sources.tiny_flux import LATENT_CHANNELS as FLUX_CHANNELS
from guidance.sources.tiny_flux import build_flux

FAMILIES = ("sd", "sd-v", "sdxl", "sd3", "dit", "flux")
SCHEDULERS = ("ddim", "dpmpp-2m", "dpmpp-2m-karras", "euler")  # the VP families' scheduler choices (sd3: flow Euler; dit: ddim)
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
    from transformers import CLIPTokenizer

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


def vp_scheduler(kind: str, prediction: str = "epsilon"):  # noqa: ANN201
    """SD's training table (scaled_linear betas) under the chosen scheduler, spaced as SD 1.x ships it."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    table = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 prediction_type=prediction, timestep_spacing="leading", steps_offset=1)
    if kind == "ddim":
        return DDIMScheduler(**table, clip_sample=False, set_alpha_to_one=True)
    if kind == "euler":
        return EulerDiscreteScheduler(**table)
    if kind in ("dpmpp-2m", "dpmpp-2m-karras"):
        return DPMSolverMultistepScheduler(**table, algorithm_type="dpmsolver++", solver_order=2,
                                           lower_order_final=True, final_sigmas_type="zero",
                                           use_karras_sigmas=kind.endswith("karras"))
    raise ValueError(f"unknown tiny scheduler {kind!r}; valid: {', '.join(SCHEDULERS)}")


def build(family: str, scheduler: str = "ddim", seed: int = 0, tokenizer_dir: Path | None = None):  # noqa: ANN201
    """The tiny pipeline object of `family` with random weights (seeded)."""
    import diffusers
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

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
            scheduler=vp_scheduler(scheduler, "v_prediction" if family == "sd-v" else "epsilon"),
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
            tokenizer_2=tokenizer, unet=unet, scheduler=vp_scheduler(scheduler), force_zeros_for_empty_prompt=True)
    if family == "flux":
        vae = tiny_vae(FLUX_CHANNELS, scaling_factor=0.3611, shift_factor=0.1159)
        return build_flux(tokenizer, clip_text_config(vocab), dict(vae.config), LATENT)
    if family == "sd3":
        transformer = diffusers.SD3Transformer2DModel(
            sample_size=LATENT, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=2 * TEXT_DIM, caption_projection_dim=16,
            pooled_projection_dim=2 * TEXT_DIM, pos_embed_max_size=LATENT)
        clip = lambda: CLIPTextModelWithProjection(clip_text_config(vocab))  # noqa: E731
        return diffusers.StableDiffusion3Pipeline(
            transformer=transformer, scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=tiny_vae(scaling_factor=1.5305, shift_factor=0.0609), text_encoder=clip(), tokenizer=tokenizer,
            text_encoder_2=clip(), tokenizer_2=tokenizer, text_encoder_3=None, tokenizer_3=None)
    transformer = diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2, sample_size=LATENT,
        patch_size=2, num_embeds_ada_norm=NUM_CLASSES, norm_type="ada_norm_zero")
    return diffusers.DiTPipeline(transformer=transformer, vae=tiny_vae(), scheduler=vp_scheduler("ddim"),
                                 id2label={i: f"class {i}" for i in range(NUM_CLASSES)})


def save_guiding_clip(path: Path, seed: int = 0) -> None:
    """A tiny random open_clip model in the zoo's format (config in the file), as universal-clip's guide."""
    import open_clip

    from guidance.zoo.store import save_model

    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    torch.manual_seed(seed + 1)
    model = open_clip.model.CLIP(**cfg)
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "size": 32}
    save_model(model, path, "eval_clip", {"model_cfg": cfg, "preprocess_cfg": preprocess}, half=False)


def save_pipeline(folder: str | Path, family: str = "sd", scheduler: str = "ddim", seed: int = 0,
                  guiding_clip: bool = True) -> Path:
    """Write a tiny random `family` pipeline to `folder` (safetensors, as save_pretrained writes it), with
    a tiny guiding CLIP for universal-clip beside it unless `guiding_clip` is False."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe = build(family, scheduler, seed, None if family == "dit" else folder / "tokenizer")
    pipe.save_pretrained(str(folder), safe_serialization=True)
    if family == "dit":  # DiTPipeline does not record its labels; real DiT folders carry them in model_index.json
        index = json.loads((folder / "model_index.json").read_text())
        index["id2label"] = {str(i): f"class {i}" for i in range(NUM_CLASSES)}
        (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    if guiding_clip:
        save_guiding_clip(folder / GUIDING_CLIP, seed)
    return folder

"""A tiny random-weight FluxPipeline, its configs shaped as FLUX.1-dev ships them, written offline.

Field by field as black-forest-labs/FLUX.1-dev's folder: a FluxTransformer2DModel with `guidance_embeds`
on 2 x 2 patches of a 16-channel VAE (scaling 0.3611, shift 0.1159, no quant convs), a CLIP text encoder
for the pooled vector, a T5 encoder for the states, and FlowMatchEulerDiscreteScheduler with dynamic
shifting (base / max image sequence 256 / 4096, shifts 0.5 / 1.15). Sizes are tiny: 1 double and 1
single block of width 16, T5 and CLIP of width 32. The transformer's config records `sample_size` (16
latents, 32 x 32 images), which diffusers keeps and ignores and the suite reads (FLUX has no size of its
own: the pipeline's default is 1024 x 1024). The T5 tokenizer is a unigram vocabulary of printable
characters built here (nothing is downloaded).
"""

from __future__ import annotations

import string
from typing import Any

LATENT_CHANNELS = 16
T5_DIM = 32
T5_LENGTH = 32  # the tokenizer's model_max_length: the suite pads T5 states to it (FLUX.1-dev: 512)


def t5_tokenizer() -> Any:
    """A T5 (unigram) tokenizer over printable characters and word-initial letters."""
    from transformers import T5TokenizerFast  # noqa: PLC0415 (optional dependency)

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(c, -2.0) for c in string.printable if not c.isspace()]
    pieces += [("\u2581" + c, -1.5) for c in string.ascii_letters + string.digits]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=T5_LENGTH)


def t5_encoder(vocab_size: int) -> Any:
    """A tiny T5 encoder (2 layers of width T5_DIM, gated-GELU as T5 v1.1, which FLUX and PixArt use)."""
    from transformers import T5Config, T5EncoderModel  # noqa: PLC0415 (optional dependency)

    return T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=T5_DIM, d_kv=8, d_ff=2 * T5_DIM, num_layers=2,
                                   num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                                   feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0, eos_token_id=1))


def build_flux(clip_tokenizer: Any, clip_config: Any, vae_config: dict[str, Any], latent: int,
               guidance_embeds: bool = True) -> Any:
    """The tiny FluxPipeline (weights from the caller's seeded generator); `vae_config` is a tiny AutoencoderKL's,
    with FLUX's 16 channels, scaling and shift."""
    import diffusers  # noqa: PLC0415 (optional dependency)
    from transformers import CLIPTextModel  # noqa: PLC0415 (optional dependency)

    vae = diffusers.AutoencoderKL.from_config({**vae_config, "use_quant_conv": False, "use_post_quant_conv": False})
    transformer = diffusers.FluxTransformer2DModel(
        patch_size=1, in_channels=4 * LATENT_CHANNELS, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=T5_DIM, pooled_projection_dim=clip_config.hidden_size,
        guidance_embeds=guidance_embeds, axes_dims_rope=(2, 2, 4))
    transformer.register_to_config(sample_size=latent)
    tokenizer_2 = t5_tokenizer()
    t5 = t5_encoder(len(tokenizer_2))
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096)
    return diffusers.FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=CLIPTextModel(clip_config),
                                  tokenizer=clip_tokenizer, text_encoder_2=t5, tokenizer_2=tokenizer_2,
                                  transformer=transformer)

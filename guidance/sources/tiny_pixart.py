"""A tiny random-weight PixArtSigmaPipeline, its configs shaped as PixArt-Sigma-XL-2-1024-MS ships them, written offline.

Field by field as PixArt-alpha/PixArt-Sigma-XL-2-1024-MS's folder, sizes aside: a PixArtTransformer2DModel
(ada_norm_single, 2 x 2 patches, learned sigma: 8 output channels for 4 latent ones, attention bias,
gelu-approximate, no micro-conditions) on T5 states, SDXL's VAE scaling (0.13025), and the DPM-Solver
multistep scheduler the checkpoint ships (guidance.sources.tiny.SHIPPED_SCHEDULERS["pixart"]). Sizes are
tiny: 2 layers of width 16, a T5 of width 32 (guidance.sources.tiny_flux), latents 16 x 16 (32 x 32 images:
the pipeline's resolution binning knows no such size, so callers pass use_resolution_binning=False).
"""

from __future__ import annotations

from typing import Any

from guidance.sources.tiny_flux import T5_DIM, t5_encoder, t5_tokenizer

LATENT_CHANNELS = 4
VAE_SCALING = 0.13025  # PixArt-Sigma uses SDXL's VAE (pixart_sigma_sdxlvae_T5_diffusers)


def build_pixart(vae: Any, scheduler: Any, latent: int) -> Any:
    """The tiny PixArtSigmaPipeline (weights from the caller's seeded generator)."""
    import diffusers  # noqa: PLC0415 (optional dependency)

    transformer = diffusers.PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=LATENT_CHANNELS, out_channels=2 * LATENT_CHANNELS,
        num_layers=2, dropout=0.0, norm_num_groups=32, cross_attention_dim=16, attention_bias=True,
        sample_size=latent, patch_size=2, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
        upcast_attention=False, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
        caption_channels=T5_DIM, use_additional_conditions=False)
    tokenizer = t5_tokenizer()
    return diffusers.PixArtSigmaPipeline(tokenizer=tokenizer, text_encoder=t5_encoder(len(tokenizer)), vae=vae,
                                         transformer=transformer, scheduler=scheduler)

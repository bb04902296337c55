"""A tiny random-weight SanaPipeline, its configs shaped as Sana_1600M_1024px_diffusers ships them, written offline.

Field by field as Efficient-Large-Model/Sana_1600M_1024px_diffusers's folder, sizes aside: a
SanaTransformer2DModel (linear self-attention, cross-attention to the caption, 1 x 1 patches, no attention
bias, 32 latent channels) on the states of a Gemma2Model, a DC-AE (AutoencoderDC, scaling 0.41407, 32 latent
channels), and the flow DPM-Solver the checkpoint ships (guidance.sources.tiny.SHIPPED_SCHEDULERS["sana"]).
Sizes are tiny: 1 layer of width 16, Gemma-2 of width 16 and 1 layer, a DC-AE of two stages of widths 16 and 32
(2x compression: latents 16 x 16, images 32 x 32; the real one compresses 32x; the pipeline's resolution
binning would move 32 x 32 to 512 x 512, so callers pass use_resolution_binning=False). The Gemma tokenizer
is a character-level vocabulary built here, with Gemma's <bos> first and right padding (nothing is downloaded).
"""

from __future__ import annotations

import string
from typing import Any

LATENT_CHANNELS = 32
DC_AE_SCALING = 0.41407  # mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers, the VAE Sana 1600M ships
GEMMA_DIM = 16
TOKENIZER_LENGTH = 32  # the tokenizer's model_max_length: the suite keeps that many Gemma states (Sana: 300)


def gemma_tokenizer() -> Any:
    """A Gemma tokenizer over single printable characters (and the newline the instruction holds)."""
    from transformers import GemmaTokenizerFast  # noqa: PLC0415 (optional dependency)

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    pieces = specials + ["\u2581", "\n"] + [c for c in string.printable if not c.isspace()]
    return GemmaTokenizerFast(vocab={p: i for i, p in enumerate(pieces)}, merges=[], add_bos_token=True,
                              padding_side="right", model_max_length=TOKENIZER_LENGTH)


def build_sana(scheduler: Any, latent: int) -> Any:
    """The tiny SanaPipeline (weights from the caller's seeded generator)."""
    import diffusers  # noqa: PLC0415 (optional dependency)
    from transformers import Gemma2Config, Gemma2Model  # noqa: PLC0415 (optional dependency)

    tokenizer = gemma_tokenizer()
    gemma = Gemma2Model(Gemma2Config(vocab_size=len(tokenizer), hidden_size=GEMMA_DIM, intermediate_size=2 * GEMMA_DIM,
                                     num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                     max_position_embeddings=4096, pad_token_id=0, eos_token_id=1, bos_token_id=2))
    vae = diffusers.AutoencoderDC(
        in_channels=3, latent_channels=LATENT_CHANNELS, attention_head_dim=4,
        encoder_block_types=("ResBlock", "EfficientViTBlock"), decoder_block_types=("ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(16, 32), decoder_block_out_channels=(16, 32),
        encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)), encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=(1, 1), downsample_block_type="conv", upsample_block_type="interpolate",
        decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=DC_AE_SCALING)
    transformer = diffusers.SanaTransformer2DModel(
        in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_attention_heads=2, attention_head_dim=8,
        num_layers=1, num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16,
        caption_channels=GEMMA_DIM, mlp_ratio=2.5, attention_bias=False, sample_size=latent, patch_size=1,
        norm_elementwise_affine=False, norm_eps=1e-6)
    return diffusers.SanaPipeline(tokenizer=tokenizer, text_encoder=gemma, vae=vae, transformer=transformer,
                                  scheduler=scheduler)

"""Tiny transformers CLIP folders for the preference evaluators' tests: random weights at small widths, with
the real CLIP BPE tokenizer (open_clip's vocabulary, written as transformers reads it) and CLIP's image
processor at 224 px with the OpenAI mean and std, saved as a user's local folder would be."""

from __future__ import annotations

from pathlib import Path

import torch
from open_clip.tokenizer import SimpleTokenizer
from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTextConfig, CLIPTokenizer,
                          CLIPVisionConfig)

SPECIAL = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}  # open_clip -> transformers
VOCAB = 49408


def clip_tokenizer() -> CLIPTokenizer:
    bpe = SimpleTokenizer()
    vocab = {SPECIAL.get(token, token): i for token, i in bpe.encoder.items()}
    merges = [tuple(pair) for pair in sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)]
    return CLIPTokenizer(vocab=vocab, merges=merges)


def image_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                              image_mean=[0.48145466, 0.4578275, 0.40821073],
                              image_std=[0.26862954, 0.26130258, 0.27577711])


def tiny_clip(projection_dim: int = 16, seed: int = 0) -> CLIPModel:
    """CLIP's layout (patch 14 at 224 px, 77 tokens, the BPE vocabulary) at width 32, one layer each."""
    torch.manual_seed(seed)
    text = CLIPTextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=77, eos_token_id=VOCAB - 1,
                          bos_token_id=VOCAB - 2, pad_token_id=VOCAB - 1)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=224, patch_size=14)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=projection_dim,
                        logit_scale_init_value=4.6052)  # exp = 100, PickScore_v1's
    return CLIPModel(config).eval()


def save_clip_folder(folder: Path, model: CLIPModel, with_processor: bool = True) -> Path:
    model.save_pretrained(folder)  # config.json + model.safetensors
    if with_processor:
        CLIPProcessor(image_processor=image_processor(), tokenizer=clip_tokenizer()).save_pretrained(folder)
    return folder

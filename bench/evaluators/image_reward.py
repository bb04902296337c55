"""ImageReward (Xu et al. 2023, THUDM/ImageReward): BLIP's ViT-L/16 image encoder, its BERT text encoder
cross-attending to the image, and an MLP on the [CLS] state, normalised by the authors' mean and std.

The `image-reward` package is not used: it downloads bert-base-uncased's tokenizer when built and unpickles
its checkpoint. The same network is built here from transformers' BLIP modules (the text encoder is
transformers' copy of BLIP's med.py, the vision encoder BLIP's ViT), and ImageReward.pt's keys are mapped
onto them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from bench.evaluators.config import ScoringConfig
from bench.evaluators.aesthetic import AestheticMLP
from bench.evaluators.base import file_digest, load_state_dict_file
from bench.evaluators.preference import (PreferenceMetric, check_folder, check_weights_file, clip_transform, load_strict,
                                         read_json, require_transformers)
from bench.evaluators.registry import Column, register_metric
from guidance.checkpoints import CheckpointError

REWARD_MEAN = 0.16717362830052426  # the authors' normalisation of the MLP's output (ImageReward.py)
REWARD_STD = 1.0333394966054072
MAX_TOKENS = 35
IMAGE_SIZE = 224
# BLIP "large": ViT-L/16 at 224 px (blip.create_vit), LayerNorm eps 1e-6 (BLIP's vit.py), exact GELU
VISION = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
          "image_size": IMAGE_SIZE, "patch_size": 16, "layer_norm_eps": 1e-6, "hidden_act": "gelu"}
# ImageReward's med_config.json (BERT-base with cross-attention, 30522 + 2 added tokens)
MED_CONFIG = {"vocab_size": 30524, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
              "intermediate_size": 3072, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
              "max_position_embeddings": 512, "pad_token_id": 0}
WEIGHT_NAMES = ("ImageReward.safetensors", "ImageReward.pt")
FOLDER_FILES = {"weights": WEIGHT_NAMES, "BERT tokenizer": ("vocab.txt",)}
FOLDER_FIX = ("pass --image-reward-model LOCAL_FOLDER holding ImageReward.pt (or its state dict as "
              "ImageReward.safetensors) from THUDM/ImageReward, optionally its med_config.json, and "
              "bert-base-uncased's vocab.txt and tokenizer_config.json")
VISION_KEYS = [(r"^cls_token$", "embeddings.class_embedding"), (r"^pos_embed$", "embeddings.position_embedding"),
               (r"^patch_embed\.proj\.", "embeddings.patch_embedding."), (r"^norm\.", "post_layernorm."),
               (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
               (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
               (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
               (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
               (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp.")]


def vision_key(key: str) -> str:
    """A key of BLIP's ViT (visual_encoder.*) as transformers' BlipVisionModel names it."""
    for pattern, replacement in VISION_KEYS:
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key)
    return key


def from_authors_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """ImageReward.pt's keys (blip.visual_encoder.*, blip.text_encoder.*, mlp.*) -> this module's; BLIP's
    contrastive projections (vision_proj, text_proj), which the score does not use, are left out."""
    out = {}
    for key, value in state.items():
        if key.startswith("blip.visual_encoder."):
            out["vision." + vision_key(key[len("blip.visual_encoder."):])] = value
        elif key.startswith("blip.text_encoder."):
            out["text." + key[len("blip.text_encoder."):]] = value
        elif key.startswith("mlp."):
            out[key] = value
    return out


def blip_tokenizer(folder: Path) -> Any:
    """bert-base-uncased's tokenizer with BLIP's two added tokens ([DEC] as bos, [ENC]), as init_tokenizer."""
    from transformers import BertTokenizer  # noqa: PLC0415 (optional dependency)

    tokenizer = BertTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


class ImageRewardNetwork(nn.Module):
    """BLIP ViT + cross-attending BERT + MLP; `forward` gives (MLP([CLS]) - mean) / std per image."""

    def __init__(self, vision: dict[str, Any], text: dict[str, Any], tokenizer: Any) -> None:
        from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel  # noqa: PLC0415

        super().__init__()
        self.vision = BlipVisionModel(BlipVisionConfig(**vision))
        self.text = BlipTextModel(BlipTextConfig(**text, encoder_hidden_size=vision["hidden_size"], is_decoder=True,
                                                 bos_token_id=None, sep_token_id=None), add_pooling_layer=False)
        self.mlp = AestheticMLP(text["hidden_size"])  # the same five-layer MLP class as the aesthetic predictor
        self.tokenizer = tokenizer
        self.preprocess = clip_transform(vision["image_size"])  # ImageReward's _transform is CLIP's

    def forward(self, images: list[Image.Image], texts: list[str]) -> Tensor:
        device = self.mlp.layers[0].weight.device
        tokens = self.tokenizer(texts, padding="max_length", truncation=True, max_length=MAX_TOKENS,
                                return_tensors="pt")
        pixels = torch.stack([self.preprocess(im) for im in images]).to(device)
        image_embeds = self.vision(pixel_values=pixels).last_hidden_state
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=device)
        out = self.text(input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device),
                        encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts)
        rewards = self.mlp(out.last_hidden_state[:, 0, :].float())
        return ((rewards - REWARD_MEAN) / REWARD_STD).squeeze(-1)


def text_config(folder: Path) -> dict[str, Any]:
    """MED_CONFIG, with the folder's med_config.json where it has one."""
    config = dict(MED_CONFIG)
    if (folder / "med_config.json").is_file():
        found = read_json(folder / "med_config.json", "--image-reward-model")
        config.update({k: found[k] for k in MED_CONFIG if k in found})
    return config


def weights_path(folder: Path) -> Path:
    return next(folder / n for n in WEIGHT_NAMES if (folder / n).is_file())


def build_image_reward(state: dict[str, Tensor], tokenizer: Any, vision: dict[str, Any] | None = None,
                       text: dict[str, Any] | None = None, path: Any = "") -> ImageRewardNetwork:
    """The network with an ImageReward state dict in the authors' key names (strictly: every weight used)."""
    network = ImageRewardNetwork(vision or VISION, text or MED_CONFIG, tokenizer)
    load_strict(network, from_authors_keys(state), "--image-reward-model", path, "ImageReward (BLIP-L + MLP)",
                ignore=("position_ids",))
    return network.eval()


@register_metric
class ImageReward(PreferenceMetric):
    """ImageReward v1.0: THUDM's reward model."""

    name = "image_reward"
    columns = {"image_reward": Column(True, "ImageReward", "standardised reward (authors' mean and std; ~N(0, 1) "
                                                           "over their training pairs)")}
    files = {"image_reward_model": "--image-reward-model"}

    @classmethod
    def provenance(cls, config: ScoringConfig) -> dict[str, str | None]:
        out = super().provenance(config)
        folder = Path(config.image_reward_model)
        if folder.is_dir() and any((folder / n).is_file() for n in WEIGHT_NAMES):
            out["--image-reward-model weights sha256"] = file_digest(weights_path(folder))
        return out
    about = ("ImageReward: BLIP's cross-attended [CLS] state through ImageReward's MLP, standardised by the authors' "
             "mean and std (higher is preferred by people; about -2 to 2).")

    @classmethod
    def check_files(cls, config: ScoringConfig) -> None:
        require_transformers("--metrics image_reward")
        folder = check_folder(config.image_reward_model, "--image-reward-model", FOLDER_FILES, FOLDER_FIX)
        check_weights_file(weights_path(folder), "--image-reward-model", FOLDER_FIX)

    @classmethod
    def load_network(cls, config: ScoringConfig) -> nn.Module:
        return load_image_reward(check_folder(config.image_reward_model, "--image-reward-model", FOLDER_FILES,
                                              FOLDER_FIX))


def load_image_reward(folder: Path, vision: dict[str, Any] | None = None) -> ImageRewardNetwork:
    """The network from a local ImageReward folder (`vision`: BLIP-L's ViT unless a test passes a smaller one)."""
    path = check_weights_file(weights_path(folder), "--image-reward-model", FOLDER_FIX)
    try:
        tokenizer = blip_tokenizer(folder)
    except (OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"--image-reward-model {folder}: no loadable BERT tokenizer "
                              f"({str(err).splitlines()[0][:140]}); {FOLDER_FIX}") from None
    return build_image_reward(load_state_dict_file(path, "--image-reward-model"), tokenizer, vision=vision,
                              text=text_config(folder), path=path)

"""A diffusers folder's components checked from their files (guidance.sources.components): the folders
save_pretrained writes pass, every family; the damage the bad-input suite (tests/bench/runner/test_preflight.py) feeds
through the CLI is refused here by name."""

from __future__ import annotations

import json
import shutil

import pytest

from guidance.sources.components import check_memory, check_pipeline_folder
from guidance.checkpoints import CheckpointError


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "dit"])
def test_the_folders_save_pretrained_writes_pass(family, tiny_pipeline):
    check_pipeline_folder(tiny_pipeline(family), batch_size=64)


def test_sharded_weights_are_read_through_their_index(tiny_pipeline, tmp_path):
    root = shutil.copytree(tiny_pipeline("sd"), tmp_path / "pipe")
    single = root / "unet" / "diffusion_pytorch_model.safetensors"
    shard = single.with_name("diffusion_pytorch_model-00001-of-00001.safetensors")
    single.rename(shard)
    index = single.with_name("diffusion_pytorch_model.safetensors.index.json")
    from safetensors import safe_open

    with safe_open(str(shard), "pt") as f:
        index.write_text(json.dumps({"weight_map": {k: shard.name for k in f.keys()}}))
    check_pipeline_folder(root)
    index.write_text(json.dumps({"weight_map": {"x": "../../elsewhere.safetensors"}}))
    with pytest.raises(CheckpointError, match="lists shard elsewhere.safetensors"):
        check_pipeline_folder(root)


def test_a_variant_only_component_names_the_file_from_pretrained_opens(tiny_pipeline, tmp_path):
    root = shutil.copytree(tiny_pipeline("sd"), tmp_path / "pipe")
    weights = root / "vae" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_name("diffusion_pytorch_model.fp16.safetensors"))
    with pytest.raises(CheckpointError, match="from_pretrained opens diffusion_pytorch_model.safetensors"):
        check_pipeline_folder(root)


def test_the_memory_bound_counts_latents_and_decoded_images(tmp_path):
    """64 px latents of 4 channels, a VAE of 4 levels (8x): per image 4 B x 64^2 x (4 + 3 x 64) = 3,211,264 B."""
    network, vae = {"sample_size": 64, "in_channels": 4}, {"block_out_channels": [1, 2, 3, 4]}
    check_memory(tmp_path, network, vae, batch_size=2, memory=2 * 3_211_264)
    with pytest.raises(CheckpointError, match=r"sample_size 64 makes one batch of 3 .* 0\.0 GiB"):
        check_memory(tmp_path, network, vae, batch_size=3, memory=2 * 3_211_264)
    with pytest.raises(CheckpointError, match="must be positive whole numbers"):
        check_memory(tmp_path, {"sample_size": -8, "in_channels": 4}, vae, batch_size=1, memory=2**40)

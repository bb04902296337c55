"""Bad pipeline folders are refused before any weight is read, in one line naming the problem and the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from guidance.models import load_bundle
from guidance.sources.tiny import clip_text_config, tiny_vae

pytest.importorskip("diffusers", reason="diffusers is not installed (the `diffusers` extra)")
CLIPTextModel = pytest.importorskip("transformers").CLIPTextModel


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def refused(spec: str, *words: str) -> str:
    with pytest.raises(ValueError) as err:
        load_bundle(spec)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


def test_a_missing_path(tmp_path):
    refused(f"diffusers:{tmp_path / 'nowhere'}", "not found", "model_index.json")


def test_a_pickled_checkpoint(tmp_path):
    for name in ("model.ckpt", "pytorch_model.bin"):
        (tmp_path / name).write_bytes(b"\x80\x04")
        refused(f"diffusers:{tmp_path / name}", "pickled", "safetensors")


def test_a_single_safetensors_file(tmp_path):
    (tmp_path / "sd15.safetensors").write_bytes(b"")
    refused(f"diffusers:{tmp_path / 'sd15.safetensors'}", "without its config", "download", "from_single_file")


def test_a_folder_without_model_index(tmp_path):
    refused(f"diffusers:{tmp_path}", "no model_index.json")


def test_a_missing_component(tiny_pipeline, tmp_path):
    folder = copy(tiny_pipeline("sd"), tmp_path / "sd")
    shutil.rmtree(folder / "vae")
    refused(f"diffusers:{folder}", "lacks its vae/", "save_pretrained")


def test_an_unsupported_pipeline_class(tiny_pipeline, tmp_path):
    folder = copy(tiny_pipeline("sd"), tmp_path / "sd")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "KandinskyPipeline"}))
    refused(f"diffusers:{folder}", "KandinskyPipeline", "StableDiffusionPipeline")


def test_pickled_component_weights(tiny_pipeline, tmp_path):
    folder = copy(tiny_pipeline("sd"), tmp_path / "sd")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(folder / "unet" / "diffusion_pytorch_model.bin")
    refused(f"diffusers:{folder}", "only pickled weights", "safe_serialization")


def test_a_vae_of_another_latent_width(tiny_pipeline, tmp_path):
    folder = copy(tiny_pipeline("sd"), tmp_path / "sd")
    shutil.rmtree(folder / "vae")
    tiny_vae(latent_channels=8).save_pretrained(str(folder / "vae"))
    refused(f"diffusers:{folder}", "takes 4 latent channels but the vae makes 8", "same pipeline")


def test_a_text_encoder_of_another_width(tiny_pipeline, tmp_path):
    folder = copy(tiny_pipeline("sd"), tmp_path / "sd")
    vocab = json.loads((folder / "text_encoder" / "config.json").read_text())["vocab_size"]
    shutil.rmtree(folder / "text_encoder")
    CLIPTextModel(clip_text_config(vocab, hidden=48)).save_pretrained(str(folder / "text_encoder"))
    refused(f"diffusers:{folder}", "32-wide text states", "makes 48", "same pipeline")


def test_dynamic_shifting_follows_the_pipelines_mu(tiny_pipeline, tmp_path):
    """use_dynamic_shifting: the trajectory is set_timesteps(n, mu) with the mu diffusers' SD3 pipeline computes
    for the folder's image size (64 tokens: 16 x 16 latents in 2 x 2 patches); parity: test_diffusers_parity."""
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

    from guidance.models import load_bundle

    folder = copy(tiny_pipeline("sd3"), tmp_path / "sd3")
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "use_dynamic_shifting": True}))
    bundle = load_bundle(f"diffusers:{folder}")
    config = bundle.pipe.scheduler.config
    mu = calculate_shift(64, config.base_image_seq_len, config.max_image_seq_len, config.base_shift, config.max_shift)
    bundle.pipe.scheduler.set_timesteps(10, mu=mu)
    expected = [bundle.process.t_to_sigma(float(t)) for t in bundle.pipe.scheduler.sigmas]
    assert bundle.process.sigmas(10) == pytest.approx(expected, rel=1e-12)


def test_a_caption_encoder_of_another_width(tiny_pipeline, tmp_path):
    """Sana's transformer projects caption_channels-wide Gemma-2 states (PixArt's, T5's d_model: the same check)."""
    from transformers import Gemma2Config, Gemma2Model

    folder = copy(tiny_pipeline("sana"), tmp_path / "sana")
    config = json.loads((folder / "text_encoder" / "config.json").read_text())
    shutil.rmtree(folder / "text_encoder")
    Gemma2Model(Gemma2Config(vocab_size=config["vocab_size"], hidden_size=24, intermediate_size=32, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1, head_dim=8)).save_pretrained(
        str(folder / "text_encoder"))
    refused(f"diffusers:{folder}", "16-wide text states", "makes 24", "same pipeline")

"""A diffusers pipeline as a model bundle: shapes, process, conditions, decoding, fingerprint, refusals."""

from __future__ import annotations

import argparse
import os
import shutil

import pytest
import torch

from bench.runner.cli import add_run_arguments, config_from_args
from bench.runner.config import BenchConfig
from bench.prompts.readers import PromptSet
from bench.runner.applicability import applicable_guidance, check_compatible
from bench.runner.store import load_prompt_set
from guidance.bundle import ModelBundle
from guidance.guiders import make_guidance
from guidance.models import load_bundle
from guidance.samplers import sample
from guidance.sources import pipeline as pipeline_module
from guidance.sources.schedule import PipelineFlow, PipelineVP

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (the `diffusers` extra)")
pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def sd(tiny_pipeline):
    return load_bundle(f"diffusers:{tiny_pipeline('sd')}")


def test_is_a_model_bundle_in_latent_space(sd):
    assert isinstance(sd, ModelBundle)
    assert sd.sample_shape == (4, 16, 16) and sd.clip_denoised is False
    assert sd.source.startswith("diffusers:")
    assert sd.guiding_models()["decoder_clip"] is not None and sd.guiding_models()["clip"] is None


def test_loading_sets_hf_hub_offline_only_while_loading(tiny_pipeline, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    seen = []
    original = pipeline_module.diffusers.DiffusionPipeline.from_pretrained

    def spy(*args, **kwargs):
        seen.append((os.environ.get("HF_HUB_OFFLINE"), kwargs.get("local_files_only"), kwargs.get("use_safetensors")))
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline_module.diffusers.DiffusionPipeline, "from_pretrained", spy)
    load_bundle(f"diffusers:{tiny_pipeline('sd')}")
    assert seen == [("1", True, True)] and "HF_HUB_OFFLINE" not in os.environ


def test_the_default_trajectory_is_the_schedulers(sd):
    """SD 1.5 ships PNDM (PLMS), which the suite runs as DDIMScheduler.from_config: leading spacing,
    steps_offset 1 and set_alpha_to_one false, so the last step lands on abar_0, not on sigma 0."""
    assert isinstance(sd.process, PipelineVP) and type(sd.pipe.scheduler).__name__ == "PNDMScheduler"
    sched = diffusers.DDIMScheduler.from_config(sd.pipe.scheduler.config)
    sched.set_timesteps(10)
    expected = [sd.process.timestep_sigma(int(t)) for t in sched.timesteps]  # leading, steps_offset 1: 901 .. 1
    assert [int(t) for t in sched.timesteps][:2] == [901, 801]
    assert sd.process.sigmas(10) == [*expected, sd.process.timestep_sigma(0)]
    assert sd.process.sigmas(10, "leading") != sd.process.sigmas(10)  # the suite's leading has steps_offset 0


def test_flow_pipeline_process(tiny_pipeline):
    bundle = load_bundle(f"diffusers:{tiny_pipeline('sd3')}")
    assert isinstance(bundle.process, PipelineFlow) and bundle.process.shift == 3.0 and bundle.prediction == "flow"
    sigmas = bundle.process.sigmas(5)
    assert sigmas[0] == float("inf") and sigmas[-1] == 0.0 and len(sigmas) == 6


def test_null_condition_is_encoded_once_and_cfg_is_one_forward(sd, monkeypatch):
    calls = {"null": 0, "forward": []}
    encode_null = sd.net.encode_null

    def counting_null():
        calls["null"] += 1
        return encode_null()

    monkeypatch.setattr(sd.net, "encode_null", counting_null)
    sd.net._null.clear()
    hook = sd.net.network.register_forward_hook(lambda m, args, out: calls["forward"].append(args[0].shape[0]))
    try:
        cond = sd.conditions(["a cat", "a dog", "a cow"])
        with torch.no_grad():
            sample(sd.denoiser, sd.process, sd.process.sigmas(3), make_guidance("cfg", 4.0), cond, sd.sample_shape,
                   [0, 1, 2], clip_denoised=False)
    finally:
        hook.remove()
    assert calls["null"] == 1
    assert calls["forward"] == [6, 6, 6]  # conditional and unconditional in one batched pass per step


def test_decode_runs_in_batches_and_matches_one_by_one(sd, monkeypatch):
    monkeypatch.setattr(pipeline_module, "DECODE_BATCH", 3)
    sizes = []
    hook = sd.pipe.vae.decoder.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
    latents = torch.randn(7, *sd.sample_shape, generator=torch.Generator().manual_seed(0))
    try:
        images = sd.decode(latents)
    finally:
        hook.remove()
    assert sizes == [3, 3, 1] and images.shape == (7, 3, 32, 32)
    assert images.min() >= -1 and images.max() <= 1
    assert torch.allclose(images[4:5], sd.decode(latents[4:5]), atol=1e-6)


def test_fingerprint_follows_the_files(tiny_pipeline, tmp_path):
    folder = shutil.copytree(tiny_pipeline("sd"), tmp_path / "sd")
    before = load_bundle(f"diffusers:{folder}").fingerprint()
    assert load_bundle(f"diffusers:{folder}").fingerprint() == before
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(path.read_text().replace('"steps_offset": 1', '"steps_offset": 0'))
    assert load_bundle(f"diffusers:{folder}").fingerprint() != before


def test_dit_labels_from_the_label_column_a_number_or_id2label(tiny_pipeline):
    dit = load_bundle(f"diffusers:{tiny_pipeline('dit')}")
    assert dit.conditions(["class 5", "12"]).model.tolist() == [5, 12]
    assert dit.conditions(["anything", "else"], torch.tensor([3, 4])).model.tolist() == [3, 4]
    assert dit.denoiser.null_cond(torch.tensor([1, 2])).tolist() == [1000, 1000]
    with pytest.raises(ValueError, match="neither a class id nor a label"):
        dit.conditions(["a zebra"])
    with pytest.raises(ValueError, match="out of range 0..999"):
        dit.conditions(["x"], torch.tensor([1000]))


def test_pixel_range_methods_are_refused_on_latents(sd):
    prompts = PromptSet("p", [], "test")
    for name in ("cfg-dynamic-threshold",):
        with pytest.raises(ValueError, match="thresholds x0 as pixels"):
            check_compatible(BenchConfig(guidance=[name], metrics=["clip_score"]), prompts, sd)
    check_compatible(BenchConfig(guidance=["cfg", "cfg-rescale", "apg", "universal-clip"], metrics=["clip_score"]),
                     prompts, sd)


def test_universal_clip_needs_a_decoder_clip(sd, tiny_pipeline, tmp_path):
    folder = shutil.copytree(tiny_pipeline("sd"), tmp_path / "sd")
    (folder / "guiding_clip.safetensors").unlink()
    bundle = load_bundle(f"diffusers:{folder}")
    with pytest.raises(ValueError, match="decoder_clip"):
        make_guidance("universal-clip", 5.0, bundle.guiding_models())


def test_universal_clip_raises_the_guiding_similarity(sd):
    cond = sd.conditions(["a red cat", "a blue house"])
    sigmas = sd.process.sigmas(4)
    similarity = []
    for scale in (0.0, 30.0):
        with torch.no_grad():
            x = sample(sd.denoiser, sd.process, sigmas, make_guidance("universal-clip", scale, sd.guiding_models()),
                       cond, sd.sample_shape, [0, 1], clip_denoised=False)
            image = torch.nn.functional.normalize(sd.guide.encode_image(sd.decode(x)), dim=-1)
            text = torch.nn.functional.normalize(sd.guide.encode_text(cond.clip_tokens), dim=-1)
        similarity.append((image * text).sum(-1))
    assert bool((similarity[1] > similarity[0]).all())
    cost = make_guidance("universal-clip", 30.0, sd.guiding_models()).cost_per_image(sigmas[:-1])
    assert (cost.network_passes, cost.guide_passes, cost.backward_passes) == (4, 4, 4)


def test_guidance_all_on_a_pipeline_is_what_it_can_run(tiny_pipeline, tmp_path):
    every = BenchConfig.from_preset("tiny", guidance=["all"], prompts=str(_prompt_file(tmp_path)))
    prompts = load_prompt_set(every)

    def names(folder) -> set[str]:
        return set(applicable_guidance(every, prompts, load_bundle(f"diffusers:{folder}"), note=lambda _: None).guidance)

    assert {"universal-clip", "apg", "pag", "tcfg"} <= names(tiny_pipeline("sd"))
    assert not {"classifier", "clip", "autoguidance", "cfg-dynamic-threshold"} & names(tiny_pipeline("sd"))
    folder = shutil.copytree(tiny_pipeline("sd"), tmp_path / "sd")
    (folder / "guiding_clip.safetensors").unlink()
    assert "universal-clip" not in names(folder)


def _prompt_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red cat\ntwo dogs\n")
    return path


def test_the_sampler_defaults_to_the_pipelines_scheduler(tiny_pipeline):
    def sampler(*argv: str) -> str:
        parser = argparse.ArgumentParser()
        add_run_arguments(parser)
        return config_from_args(parser.parse_args(list(argv))).sampler

    assert sampler("--model", f"diffusers:{tiny_pipeline('sd3')}") == "flow-euler"
    assert sampler("--model", f"diffusers:{tiny_pipeline('sd', 'euler')}") == "euler"
    assert sampler("--model", f"diffusers:{tiny_pipeline('sd3')}", "--sampler", "ddim") == "ddim"
    assert sampler("--model", "emoji") == "ddim"  # the zoo: the preset's


def test_a_guiding_clip_named_by_json_is_checked(tiny_pipeline, tmp_path):
    folder = shutil.copytree(tiny_pipeline("sd"), tmp_path / "sd")
    (folder / "guiding_clip.safetensors").unlink()
    (folder / "guiding_clip.json").write_text('{"arch": "ViT-B-32"}')
    with pytest.raises(ValueError, match="must be JSON like"):
        load_bundle(f"diffusers:{folder}")
    (folder / "guiding_clip.json").write_text('{"arch": "ViT-B-32", "pretrained": "missing.safetensors"}')
    with pytest.raises(ValueError, match="needs a local pretrained file"):
        load_bundle(f"diffusers:{folder}")

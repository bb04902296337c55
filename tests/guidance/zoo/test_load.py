"""The committed zoo loads without network, its checkpoints are validated, and each guidance steps with it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from guidance.guiders import Guidance, make_guidance
from guidance.samplers import SAMPLERS, Denoise
from guidance.zoo.load import ZOO_DIR, Zoo, load_eval_clip, load_model, load_zoo
from guidance.checkpoints import CheckpointError, read_metadata


@pytest.fixture(scope="module")
def zoo():
    return load_zoo()


def test_zoo_loads_with_models_and_metadata(zoo):
    assert zoo.unet.learned_variance and zoo.denoiser.learned_variance and zoo.denoiser.net is zoo.unet
    assert zoo.weak is None or zoo.weak.net is zoo.weak_unet
    assert zoo.process.num_timesteps == zoo.unet.config.extra.get("num_timesteps", 1000)
    assert zoo.classifier is not None and zoo.noised_clip is not None
    for kind in ("unet", "classifier", "noised_clip", "eval_clip", "eval_classifier"):
        meta = read_metadata(ZOO_DIR / f"{kind}.safetensors")
        assert meta["kind"] == kind
        assert meta["info"]["steps"] > 0 and meta["info"]["dataset_checksum"]
    total = sum(p.stat().st_size for p in ZOO_DIR.glob("*.safetensors"))
    assert total < 100e6, "committed weights must stay under 100 MB"


def _one_step(zoo: Zoo, sampler: str, guidance: Guidance, x: torch.Tensor, index: int, cond) -> torch.Tensor:  # noqa: ANN001
    """One step of `sampler` from the index-th sigma of a 10-step trajectory to the next (DDPM's noise 0)."""
    sigmas = zoo.process.sigmas(10)
    levels = [zoo.process.level(sigmas[index]), zoo.process.level(sigmas[index + 1])]
    denoise = Denoise(zoo.denoiser, guidance, cond, sigmas, zoo.clip_denoised)
    return SAMPLERS[sampler].fn(denoise, x, levels, lambda: torch.zeros_like(x))


@pytest.mark.parametrize("name,scale", [("none", 0.0), ("cfg", 3.0), ("classifier", 2.0), ("clip", 2.0)])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_one_guided_step_of_each_kind_with_zoo_models(zoo, name, scale, sampler):
    texts = ["grinning face", "red apple"]
    labels = json.loads((ZOO_DIR / "labels.json").read_text())["identity_names"]
    cond = zoo.conditions(texts, torch.tensor([labels.index(t) for t in texts]))
    guidance = make_guidance(name, scale, zoo.guiding_models())
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = _one_step(zoo, sampler, guidance, x, 2, cond)  # the 3rd of 10 steps, from t = 777 (the old index 7)
    plain = _one_step(zoo, sampler, make_guidance("none", 0, {}), x, 2, cond)
    assert out.shape == x.shape and torch.isfinite(out).all()
    if name == "none":
        assert torch.equal(out, plain)
    else:
        assert not torch.allclose(out, plain), f"{name} guidance changed nothing"


def test_eval_clip_loads_through_open_clip_and_ranks_captions():
    scorer = load_eval_clip()
    import numpy as np

    from guidance.zoo.emoji_data import render_emoji

    try:
        img = render_emoji("\U0001F600", "noto", 32)
    except FileNotFoundError:
        pytest.skip("Noto Color Emoji not installed (apt-get install fonts-noto-color-emoji)")
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        sims = scorer.encode_images(x) @ scorer.encode_texts(["grinning face", "pile of poo", "flag: Japan"]).T
    assert int(sims.argmax()) == 0


def test_missing_truncated_and_mismatched_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    truncated = tmp_path / "unet.safetensors"
    truncated.write_bytes((ZOO_DIR / "unet.safetensors").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(truncated)
    with pytest.raises(CheckpointError, match="expected"):
        load_model(ZOO_DIR / "classifier.safetensors", expected_kind="unet")
    # a directory whose unet file holds a classifier: architecture/kind mismatch named clearly
    bad = tmp_path / "zoo"
    bad.mkdir()
    shutil.copy(ZOO_DIR / "classifier.safetensors", bad / "unet.safetensors")
    with pytest.raises(CheckpointError, match="'classifier' model"):
        load_zoo(bad)
    with pytest.raises(CheckpointError, match="model directory not found"):
        load_zoo(tmp_path / "missing")


def test_a_config_from_another_version_is_a_clear_error(tmp_path):
    from safetensors.torch import load_file, save_file

    source = ZOO_DIR / "classifier.safetensors"
    meta = read_metadata(source)
    tensors = load_file(str(source))
    newer = tmp_path / "newer.safetensors"
    save_file(tensors, str(newer), metadata={"kind": "classifier", "info": "{}",
                                             "config": json.dumps({**meta["config"], "newkey": 1})})
    with pytest.raises(CheckpointError, match="newer.safetensors: its config does not fit"):
        load_model(newer)
    damaged = tmp_path / "damaged.safetensors"
    save_file(tensors, str(damaged), metadata={"kind": "classifier", "info": "{}", "config": "{not json"})
    with pytest.raises(CheckpointError, match="damaged.safetensors: its metadata is not valid JSON"):
        load_model(damaged)


def _bench_run(run_dir, models: dict, clip_scorer: str = "zoo:eval_clip") -> None:
    """A finished bench run's two files: manifest (the sha256 of every zoo file it used) and tidy results."""
    run_dir.mkdir()
    manifest = {"run_id": run_dir.name, "created": "2026-11-26T18:00:00+00:00", "device": "cpu (2 cores)",
                "wall_time_s": 12.0, "models": models, "clip_scorer": clip_scorer,
                "config": {"prompts": "emoji200", "prompt_limit": 4, "samples_per_prompt": 1, "sampler": "ddim",
                           "steps": 50, "seeds": [0, 1], "fid_inception_weights": None}}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    rows = ["guidance,scale,seed_set,n_samples,fid,kid_mean,clip_score,acc_identity,acc_subgroup,acc_group",
            "cfg,3.0,0,4,200.0,1.0,20.0,0.25,0.50,0.75", "cfg,3.0,1,4,220.0,1.0,22.0,0.25,0.25,0.75",
            "none,0.0,0,4,300.0,1.0,,0.0,0.25,0.5"]  # a cell without CLIP score and with one seed set
    (run_dir / "results.csv").write_text("\n".join(rows) + "\n")


def test_unet_card_records_a_benchmark_of_its_own_weights_only(tmp_path):
    from hashlib import sha256

    from bench.zoo import cards

    zoo_dir = tmp_path / "zoo"
    zoo_dir.mkdir()
    (zoo_dir / "unet.safetensors").write_bytes(b"weights v1")
    (zoo_dir / "eval_clip.safetensors").write_bytes(b"scorer v1")
    ours = {"unet.safetensors": sha256(b"weights v1").hexdigest(), "eval_clip.safetensors": sha256(b"scorer v1").hexdigest()}
    _bench_run(tmp_path / "ours", ours)
    _bench_run(tmp_path / "other_scorer_file", {**ours, "eval_clip.safetensors": sha256(b"scorer v0").hexdigest()})
    _bench_run(tmp_path / "guiding_clip_scores", ours, clip_scorer="GUIDING noised CLIP (scores inflated)")
    with pytest.raises(ValueError, match="other model files"):
        cards.benchmark_record([tmp_path / "ours", tmp_path / "other_scorer_file"], zoo_dir)
    with pytest.raises(ValueError, match="evaluation CLIP"):
        cards.benchmark_record([tmp_path / "guiding_clip_scores"], zoo_dir)

    record = cards.benchmark_record([tmp_path / "ours"], zoo_dir)
    cfg_cell, none_cell = record["runs"][0]["cells"]
    assert cfg_cell["acc_identity"][0] == 0.25 and cfg_cell["acc_subgroup"][0] == 0.375 and cfg_cell["fid"][0] == 210.0
    assert cfg_cell["acc_subgroup"][1] < 0.375 < cfg_cell["acc_subgroup"][2]  # a t-interval over the 2 seed sets
    assert none_cell["clip_score"] == [None, None, None] and none_cell["fid"] == [300.0, None, None]
    (zoo_dir / cards.BENCHMARK_FILE).write_text(json.dumps(record, allow_nan=False))
    table = "\n".join(cards.benchmark_lines(zoo_dir))
    assert "| cfg | 3 | 25.0% [25.0, 25.0] | 37.5% [-121.3, 196.3] | 75.0% [75.0, 75.0] | 210.0 [82.9, 337.1] |" in table
    assert "| none | 0 | 0.0% | 25.0% | 50.0% | 300.0 | - |" in table
    (zoo_dir / "eval_clip.safetensors").write_bytes(b"scorer v2")  # a retrained scorer: the record no longer applies
    assert "measured with other model files" in "\n".join(cards.benchmark_lines(zoo_dir))


def test_cards_command_writes_the_sample_grid_and_the_card(tmp_path, monkeypatch):
    """`python -m bench.zoo.cards` end to end on a copy of the UNet: samples, grid PNG, prompt list, card."""
    from bench.zoo import cards

    monkeypatch.setattr(cards, "SAMPLE_PROMPTS", 4)  # the command samples 32; 4 keep the test short
    shutil.copy(ZOO_DIR / "unet.safetensors", tmp_path / "unet.safetensors")
    cards.main(["--out", str(tmp_path)])
    assert (tmp_path / "unet_samples.png").stat().st_size > 0
    assert len((tmp_path / "unet_samples.txt").read_text().splitlines()) == cards.SAMPLE_PROMPTS
    assert "![CFG s=3, 50 DDIM steps" in (tmp_path / "unet.md").read_text()


def test_eval_clip_scorer_preprocesses_as_open_clip_does():
    """The scorer takes images in [-1, 1]; its embeddings must equal open_clip's own eval transform (PIL
    image -> [0, 1] -> normalised by the checkpoint's mean and std) fed to the same model."""
    import numpy as np
    import open_clip
    from PIL import Image

    scorer = load_eval_clip()
    preprocess = read_metadata(ZOO_DIR / "eval_clip.safetensors")["config"].get("preprocess_cfg", {})
    transform = open_clip.image_transform(scorer.image_size, is_train=False, mean=preprocess.get("mean"),
                                          std=preprocess.get("std"))
    pixels = np.random.default_rng(0).integers(0, 256, (2, scorer.image_size, scorer.image_size, 3), dtype=np.uint8)
    reference = torch.stack([transform(Image.fromarray(p)) for p in pixels])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        torch.testing.assert_close(scorer.encode_images(x), scorer.model.encode_image(reference, normalize=True),
                                   rtol=1e-4, atol=1e-5)

"""The LAION aesthetic predictor on a tiny random CLIP (768-d projection, as ViT-L/14's) and a random MLP saved
in the authors' layout: the score against their simple_inference.py computation (CLIP's preprocess, image
features, numpy L2 normalisation, the MLP), batch-size invariance, and the up-front checks."""

from __future__ import annotations

import argparse
import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from bench.runner.config import BenchConfig
from bench.evaluators.aesthetic import AestheticMLP, LAIONAesthetic, l2_normalised
from bench.evaluators.preference import REAL_ONLY
from tests.bench.evaluators.clip_folders import save_clip_folder, tiny_clip
from guidance.checkpoints import CheckpointError


def images(n: int = 4) -> list[Image.Image]:
    g = np.random.default_rng(2)
    return [Image.fromarray(g.integers(0, 256, (36, 36 + 10 * i, 3), dtype=np.uint8), "RGB") for i in range(n)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("aesthetic")
    torch.manual_seed(3)
    mlp = AestheticMLP(768)
    for layer in mlp.layers:  # the authors' init gives near-constant outputs; spread them so a slip shows
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=0.5)
    torch.save(mlp.state_dict(), root / "sac+logos+ava1-l14-linearMSE.pth")
    clip = save_clip_folder(root / "clip-vit-large-patch14", tiny_clip(projection_dim=768), with_processor=False)
    return SimpleNamespace(aesthetic_weights=str(root / "sac+logos+ava1-l14-linearMSE.pth"), aesthetic_clip=str(clip))


@pytest.fixture(scope="module")
def network(files):
    return LAIONAesthetic.load_network(files)


def authors_scores(files, ims: list[Image.Image]) -> np.ndarray:
    """simple_inference.py: image_features = encode_image(preprocess(img)) with CLIP's own preprocess (written
    out); normalized (numpy L2, zero norms left); the MLP (dropouts are identity at inference) as five affine maps."""
    from torchvision import transforms
    from transformers import CLIPModel

    preprocess = transforms.Compose([transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
                                     transforms.CenterCrop(224), lambda im: im.convert("RGB"), transforms.ToTensor(),
                                     transforms.Normalize((0.48145466, 0.4578275, 0.40821073),
                                                          (0.26862954, 0.26130258, 0.27577711))])
    model = CLIPModel.from_pretrained(files.aesthetic_clip, local_files_only=True).eval()
    state = torch.load(files.aesthetic_weights, weights_only=True)
    out = []
    with torch.no_grad():
        for im in ims:
            pooled = model.vision_model(pixel_values=preprocess(im).unsqueeze(0)).pooler_output
            features = model.visual_projection(pooled).numpy()
            l2 = np.atleast_1d(np.linalg.norm(features, 2, -1))
            l2[l2 == 0] = 1
            x = features / np.expand_dims(l2, -1)
            for i in (0, 2, 4, 6, 7):
                x = x @ state[f"layers.{i}.weight"].numpy().T + state[f"layers.{i}.bias"].numpy()
            out.append(x[0, 0])
    return np.array(out)


def test_score_is_the_authors_computation(network, files):
    ims = images()
    with torch.no_grad():
        got = network(ims).numpy()
    expected = authors_scores(files, ims)
    assert np.ptp(expected) > 1e-3  # the images score differently, so the comparison is not of constants
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_batch_size_does_not_change_scores(network):
    ims = images()
    with torch.no_grad():
        whole = network(ims)
        single = torch.cat([network([im]) for im in ims])
    torch.testing.assert_close(whole, single, rtol=1e-5, atol=1e-5)


def test_zero_embedding_is_left_as_it_is():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    torch.testing.assert_close(l2_normalised(x), torch.tensor([[0.0, 0.0], [0.6, 0.8]]))


def test_preprocessing_is_clips_224_px_centre_crop(network):
    """A 30 x 91 image (odd margin): the shorter side to 224, centre crop as torchvision's CenterCrop rounds it,
    OpenAI mean and std."""
    grey = Image.new("RGB", (30, 91), (10, 20, 30))
    x = network.preprocess(grey)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])
    assert x.shape == (3, 224, 224)
    torch.testing.assert_close(x[:, 100, 100], (torch.tensor([10, 20, 30]) / 255 - mean) / std, rtol=0, atol=1e-4)
    ramp = Image.fromarray(np.repeat(np.arange(91, dtype=np.uint8)[:, None, None], 30, 1).repeat(3, 2) * 2, "RGB")
    resized = np.asarray(ramp.resize((224, int(224 * 91 / 30)), Image.BICUBIC), dtype=np.float32)
    top = int(round((resized.shape[0] - 224) / 2.0))  # torchvision's CenterCrop
    expected = (torch.from_numpy(resized[top:top + 224]).permute(2, 0, 1) / 255 - mean[:, None, None]) / std[:, None, None]
    torch.testing.assert_close(network.preprocess(ramp), expected, rtol=0, atol=1e-5)


def test_bad_files_are_one_line_before_sampling(files, tmp_path):
    pickled = tmp_path / "model.pth"
    torch.save({"layers.0.weight": torch.zeros(1), "opt": argparse.Namespace()}, pickled)
    with pytest.raises(CheckpointError, match="--aesthetic-weights .*refuses it"):
        LAIONAesthetic.check_files(SimpleNamespace(aesthetic_weights=str(pickled), aesthetic_clip=files.aesthetic_clip))
    narrow = tmp_path / "narrow.safetensors"
    from safetensors.torch import save_file

    save_file(AestheticMLP(512).state_dict(), str(narrow))
    with pytest.raises(CheckpointError, match=r"--aesthetic-weights .*does not hold the aesthetic predictor's MLP "
                                              r"weights \(shapes"):
        LAIONAesthetic.load_network(SimpleNamespace(aesthetic_weights=str(narrow), aesthetic_clip=files.aesthetic_clip))
    small = save_clip_folder(tmp_path / "clip-b", tiny_clip(projection_dim=16), with_processor=False)
    with pytest.raises(CheckpointError, match="--aesthetic-clip .*16-d CLIP"):
        LAIONAesthetic.load_network(SimpleNamespace(aesthetic_weights=files.aesthetic_weights, aesthetic_clip=str(small)))
    with pytest.raises(CheckpointError, match="--aesthetic-clip is not set"):
        BenchConfig(model="diffusers:/x", metrics=["aesthetic"], aesthetic_weights=files.aesthetic_weights).validate_evaluators()


def test_check_scorers_loads_it_before_sampling(files, tmp_path):
    """bench.runner.scoring.check_scorers builds the evaluator (weights fitted to the network) before any sample."""
    from bench.runner.scoring import check_scorers

    narrow = tmp_path / "narrow.safetensors"
    from safetensors.torch import save_file

    save_file(AestheticMLP(512).state_dict(), str(narrow))
    cfg = BenchConfig(model="diffusers:/x", metrics=["aesthetic"], aesthetic_weights=str(narrow),
                      aesthetic_clip=files.aesthetic_clip)
    with pytest.raises(CheckpointError, match="does not hold the aesthetic predictor's MLP"):
        check_scorers(cfg.scoring(), torch.device("cpu"))
    assert REAL_ONLY in LAIONAesthetic.needs and not LAIONAesthetic.default


def test_a_real_models_run_scores_it_per_sample(files, tmp_path, capsys):
    """Through the harness on a tiny diffusers pipeline: per_sample.csv holds the network's score of each
    saved image, results.csv their mean, and the report's legend names it."""
    import pandas as pd

    from bench.runner.cli import main as cli_main
    from guidance.sources.tiny import save_pipeline

    pipeline = save_pipeline(tmp_path / "sd", "sd", guiding_clip=False)
    prompts = tmp_path / "drawbench.csv"
    prompts.write_text("Prompts,Category\nA red colored car.,Colors\nTwo dogs on the street.,Counting\n")
    assert cli_main(["run", "--model", f"diffusers:{pipeline}", "--guidance", "cfg", "--scales", "3", "--steps", "2",
                     "--prompts", str(prompts), "--seeds", "0", "--batch-size", "2", "--metrics", "clip_score,aesthetic",
                     "--aesthetic-weights", files.aesthetic_weights, "--aesthetic-clip", files.aesthetic_clip,
                     "--out", str(tmp_path), "--run-id", "r"]) == 0
    run = tmp_path / "r"
    per_sample = pd.read_csv(run / "per_sample.csv")
    with np.load(run / "samples" / "cfg_s3_seed0.npz") as data:
        saved = [Image.fromarray(im) for im in data["images"]]
    with torch.no_grad():
        expected = LAIONAesthetic.load_network(files)(saved).numpy()
    np.testing.assert_allclose(per_sample.sort_values("index")["aesthetic"].to_numpy(), expected, rtol=1e-5, atol=1e-5)
    results = pd.read_csv(run / "results.csv")
    assert results["aesthetic"].iloc[0] == pytest.approx(expected.mean(), rel=1e-5, abs=1e-5)
    assert set(per_sample["category"]) == {"Colors", "Counting"}
    assert "LAION aesthetic" in (run / "index.html").read_text()
    recorded = json.loads((run / "evaluators.json").read_text())["preference_evaluators"]["aesthetic"]
    assert recorded["--aesthetic-weights"] == files.aesthetic_weights
    assert recorded["--aesthetic-weights sha256"] == hashlib.sha256(open(files.aesthetic_weights, "rb").read()).hexdigest()

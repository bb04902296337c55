"""HPSv2 on a tiny random-weight open_clip CLIP of ViT-H-14's kind: the score against the authors' formula
(their validation transform and 100 x the diagonal of image_features @ text_features.T), batch-size
invariance, the preprocessing constants, and the up-front refusals of bad weights files."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from bench.runner.config import BenchConfig
from bench.evaluators.hps import HPSv2, build_hps, resize_max_size
from bench.evaluators.preference import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, check_weights_file
from guidance.checkpoints import CheckpointError

# ViT-H-14's layout (patch 14 at 224 px, 77-token context, the CLIP BPE vocabulary) at tiny widths
TINY = {"embed_dim": 16, "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "head_width": 16, "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
PROMPTS = ["a red car on a street", "an oil painting of a fox", "two cats", "a bowl of soup"]


def images(n: int = 4, size: tuple[int, int] = (48, 40)) -> list[Image.Image]:
    g = np.random.default_rng(0)
    return [Image.fromarray(g.integers(0, 256, (*size, 3), dtype=np.uint8), "RGB") for _ in range(n)]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[dict, object]:
    """A random HPS-like state dict, saved as the authors' checkpoint layout ({"state_dict": ...})."""
    import open_clip

    torch.manual_seed(0)
    state = open_clip.model.CLIP(**TINY).state_dict()
    path = tmp_path_factory.mktemp("hps") / "HPS_tiny.pt"
    torch.save({"state_dict": state}, path)
    return state, path


@pytest.fixture(scope="module")
def network(weights):
    return build_hps(weights[0], TINY)


def authors_transform(image: Image.Image) -> torch.Tensor:
    """hpsv2's preprocess_val (light_augmentation): RGB, ToTensor, ResizeMaxSize(224), Normalize(OpenAI)."""
    x = TF.to_tensor(image.convert("RGB"))
    h, w = x.shape[1:]
    scale = 224 / float(max(h, w))
    new = (round(h * scale), round(w * scale))
    x = TF.resize(x, list(new), InterpolationMode.BICUBIC)
    pad_h, pad_w = 224 - new[0], 224 - new[1]
    x = TF.pad(x, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
    return TF.normalize(x, [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])


def test_score_is_the_authors_formula(network, weights):
    """model(image, text) with output_dict gives unit-length features; HPS = 100 * diag(img @ txt.T)."""
    import open_clip

    clip = open_clip.model.CLIP(**TINY, output_dict=True).eval()
    clip.load_state_dict(weights[0])
    tokenizer = open_clip.get_tokenizer("ViT-H-14")
    ims = images()
    with torch.no_grad():
        expected = []
        for im, prompt in zip(ims, PROMPTS):  # one image and its prompt at a time, as hpsv2.score does
            out = clip(authors_transform(im).unsqueeze(0), tokenizer([prompt]))
            expected.append(100 * torch.diagonal(out["image_features"] @ out["text_features"].T)[0])
        got = network(ims, PROMPTS)
    # float32 through two transformer layers of width 32: agreement to ~1e-6 of the score's scale
    torch.testing.assert_close(got, torch.stack(expected), rtol=1e-5, atol=1e-4)
    assert got.abs().max() <= 100


def test_batch_size_does_not_change_scores(network):
    ims = images()
    with torch.no_grad():
        whole = network(ims, PROMPTS)
        single = torch.cat([network([im], [p]) for im, p in zip(ims, PROMPTS)])
    torch.testing.assert_close(whole, single, rtol=1e-5, atol=1e-4)


def test_preprocessing_pads_the_short_side_and_uses_openai_constants(network):
    """A 40 x 20 uniform grey image: the longer side becomes 224, the shorter 112, centred between zero
    padding (which normalises to -mean/std), the image to (g/255 - mean)/std."""
    grey = Image.new("RGB", (20, 40), (100, 100, 100))  # PIL size is (width, height)
    x = network.preprocess(grey)
    mean, std = torch.tensor(OPENAI_CLIP_MEAN), torch.tensor(OPENAI_CLIP_STD)
    assert x.shape == (3, 224, 224)
    torch.testing.assert_close(x[:, 112, 112], (100 / 255 - mean) / std, rtol=0, atol=1e-5)
    torch.testing.assert_close(x[:, 112, 0], -mean / std)  # left padding: 56 columns of zeros
    torch.testing.assert_close(x[:, 112, 223], -mean / std)
    assert OPENAI_CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert OPENAI_CLIP_STD == (0.26862954, 0.26130258, 0.27577711)
    square = TF.to_tensor(Image.new("RGB", (224, 224), (7, 7, 7)))
    assert resize_max_size(square, 224) is square  # the authors' transform leaves a 224 px image alone


def test_metric_scores_uint8_batches_like_the_network(network, weights, monkeypatch):
    """Through the registry's PerImageMetric: update(batch) / compute() give the network's scores."""
    from types import SimpleNamespace

    from bench.evaluators.registry import ScoringBatch

    monkeypatch.setattr(HPSv2, "load_network", classmethod(lambda cls, config: network))
    config = SimpleNamespace(hps_weights=str(weights[1]))
    metric = HPSv2.build(SimpleNamespace(config=config, device=torch.device("cpu")))
    ims = images()
    batch = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in ims])
    metric.update(ScoringBatch(batch[:3], PROMPTS[:3]))
    metric.update(ScoringBatch(batch[3:], PROMPTS[3:]))
    with torch.no_grad():
        expected = network(ims, PROMPTS)
    torch.testing.assert_close(metric.compute()["hpsv2"], expected, rtol=1e-5, atol=1e-4)


def test_safetensors_weights_load_as_the_torch_file_does(weights, tmp_path):
    from safetensors.torch import save_file

    from bench.evaluators.base import load_state_dict_file

    path = tmp_path / "HPS_v2.1.safetensors"
    save_file({k: v.contiguous() for k, v in weights[0].items()}, str(path))
    assert check_weights_file(path, "--hps-weights", "fix") == path
    # the loader reads either format into the same state dict (the .pt's nested "state_dict" unwrapped)
    a, b = load_state_dict_file(path, "--hps-weights"), load_state_dict_file(weights[1], "--hps-weights")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_mismatched_weights_are_one_line(weights):
    other = {**TINY, "vision_cfg": {**TINY["vision_cfg"], "width": 64, "head_width": 32}}
    with pytest.raises(CheckpointError, match=r"--hps-weights .*does not hold open_clip ViT-H-14 \(HPS\) weights"):
        build_hps(weights[0], other)


def test_pickled_missing_and_foreign_files_are_refused_up_front(tmp_path):
    pickled = tmp_path / "HPS_v2.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=1)}, pickled)
    with pytest.raises(CheckpointError, match=r"weights_only=True\) refuses it"):
        check_weights_file(pickled, "--hps-weights", "fix")
    with pytest.raises(CheckpointError, match="file not found"):
        check_weights_file(tmp_path / "absent.pt", "--hps-weights", "fix")
    text = tmp_path / "weights.txt"
    text.write_text("x")
    with pytest.raises(CheckpointError, match="not a weights file"):
        check_weights_file(text, "--hps-weights", "fix")
    fake = tmp_path / "HPS_v2.safetensors"
    fake.write_text("not safetensors")
    with pytest.raises(CheckpointError, match=r"--hps-weights .*not a readable \.safetensors file"):
        check_weights_file(fake, "--hps-weights", "fix")
    with pytest.raises(CheckpointError, match="--hps-weights is not set"):
        BenchConfig(model="diffusers:/nowhere", metrics=["hpsv2"]).validate_evaluators()


def test_the_zoo_refuses_it_as_for_real_images_only():
    with pytest.raises(ValueError, match="apply to real images only"):
        BenchConfig(metrics=["clip_score", "hpsv2"]).validate()
    assert "hpsv2" not in BenchConfig().metrics  # not in the default --metrics

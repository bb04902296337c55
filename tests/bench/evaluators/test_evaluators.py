"""The evaluators on small hand-checkable cases: CMMD, precision/recall/density/coverage, Fréchet distance
and KID against torchmetrics, the bootstrap, reference caching, and the DINOv2 path on a tiny random ViT."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from bench.evaluators.base import ChunkedSums, FeatureNet
from bench.evaluators.cmmd import CMMD, SCALE, rbf_kernel
from bench.evaluators.diversity import PromptDiversity
from bench.evaluators.fid import FrechetDistance
from bench.stats.bootstrap import shifted_interval
from bench.evaluators.kid import KernelDistance
from bench.evaluators.prdc import PrecisionRecall
from bench.evaluators.reference import Reference, reference_source
from guidance.checkpoints import CheckpointError


def test_cmmd_of_a_hand_computed_case():
    """Reference (0,0), (6,8); samples (0,0), (0,10): squared distances 100, 100 within, 0/100/100/40 across,
    so 1000 * MMD^2 = 1000 * (2 e^-0.5 - (1 + 2 e^-0.5 + e^-0.2) / 2) with sigma 10 (unbiased: no diagonals)."""
    ref = Reference.of(torch.tensor([[0.0, 0.0], [6.0, 8.0]]))
    samples = torch.tensor([[0.0, 0.0], [0.0, 10.0]])
    e5, e2 = math.exp(-0.5), math.exp(-0.2)
    expected = 1000 * (2 * e5 - (1 + 2 * e5 + e2) / 2)
    assert CMMD(ref, samples, 2).value()["cmmd"] == pytest.approx(expected, rel=1e-9)
    assert rbf_kernel(torch.zeros(1, 2), torch.tensor([[6.0, 8.0]])).item() == pytest.approx(e5)


def test_cmmd_is_zero_in_expectation_for_two_samples_of_one_distribution():
    g = torch.Generator().manual_seed(0)
    unbiased, biased = [], []
    for _ in range(300):
        x, y = (torch.randn(6, 4, generator=g) * 6 for _ in range(2))
        unbiased.append(CMMD(Reference.of(x), y, 6).value()["cmmd"])
        kxx, kyy, kxy = rbf_kernel(x, x).mean(), rbf_kernel(y, y).mean(), rbf_kernel(x, y).mean()
        biased.append(float(SCALE * (kxx + kyy - 2 * kxy)))  # the paper code's estimator, diagonals kept
    mean, se = np.mean(unbiased), np.std(unbiased) / math.sqrt(len(unbiased))
    assert abs(mean) < 3 * se, (mean, se)
    assert np.mean(biased) > 10 * se  # the biased one is clearly positive at n = 6


def _naive_prdc(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """Kynkäänniemi / Naeem by their definitions, with explicit loops."""
    def radii(x):
        return [sorted(np.linalg.norm(x - p, axis=1))[k] for p in x]

    rr, fr = radii(real), radii(fake)
    d = lambda a, b: float(np.linalg.norm(a - b))  # noqa: E731
    precision = np.mean([any(d(f, r) <= rr[i] for i, r in enumerate(real)) for f in fake])
    recall = np.mean([any(d(r, f) <= fr[j] for j, f in enumerate(fake)) for r in real])
    density = sum(d(f, r) <= rr[i] for f in fake for i, r in enumerate(real)) / (k * len(fake))
    coverage = np.mean([min(d(r, f) for f in fake) <= rr[i] for i, r in enumerate(real)])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def test_precision_recall_density_coverage_of_hand_checked_points():
    """1-D reference 0, 1, 2, 3, 10: 3rd-neighbour radii 3, 2, 2, 3, 9. Samples 1.5, 2.5, 4, 20, 21: the first
    three lie in reference balls (4 on ball 2's edge), 20 and 21 in none: precision 3/5; they lie in 5, 5
    and 3 balls: density 13/15. Samples 1.5, 2.5, 4, 5 (radii 3.5, 2.5, 2.5, 3.5) reach every reference point
    but 10: recall 4/5."""
    ref = Reference.of(torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]]))
    out = PrecisionRecall(ref, torch.tensor([[1.5], [2.5], [4.0], [20.0], [21.0]]), 5).value()
    assert out["precision"] == pytest.approx(0.6) and out["density"] == pytest.approx(13 / 15)
    out = PrecisionRecall(ref, torch.tensor([[1.5], [2.5], [4.0], [5.0]]), 5).value()
    assert out["recall"] == pytest.approx(0.8) and out["precision"] == 1.0 and out["density"] == pytest.approx(1.25)
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(12, 3, generator=g), torch.randn(9, 3, generator=g) + 0.7
    ours = PrecisionRecall(Reference.of(real), fake, 4).value()
    naive = _naive_prdc(real.double().numpy(), fake.double().numpy())
    assert ours == pytest.approx(naive) and 0 < naive["coverage"] < 1 and 0 < naive["recall"] < 1


def test_precision_recall_of_too_few_points_is_nan():
    out = PrecisionRecall(Reference.of(torch.randn(10, 2)), torch.randn(3, 2), 3).value()
    assert all(math.isnan(v) for v in out.values())


def test_frechet_distance_equals_torchmetrics_and_its_resamples_use_the_same_trace():
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Identity(nn.Module):
        num_features = 5

        def forward(self, x):
            return x

    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(40, 5, generator=g), torch.randn(7, 5, generator=g) * 1.5 + 0.3
    tm = FrechetInceptionDistance(feature=Identity())
    for part in real.split(16):
        tm.update(part, real=True)
    for part in fake.split(3):
        tm.update(part, real=False)
    sums = ChunkedSums.of(real, 16)
    metric = FrechetDistance(Reference(real, sums.sum, sums.cov_sum, sums.num_samples), fake, chunk=3)
    assert metric.value()["fid"] == float(tm.compute())  # bit-identical: the same chunked sums
    ones = torch.ones(1, len(fake), dtype=torch.int64)
    assert float(metric.resampled(ones)["fid"][0]) == pytest.approx(metric.value()["fid"], rel=1e-5)
    many = torch.randn(30, 5, generator=g)  # n > d: the d x d Gram matrix
    metric = FrechetDistance(Reference.of(real), many, 8)
    assert float(metric.resampled(torch.ones(1, 30))["fid"][0]) == pytest.approx(metric.value()["fid"], rel=1e-5)


def test_kid_equals_torchmetrics_and_resamples_of_everything_are_the_full_unbiased_mmd():
    from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd

    class Identity(nn.Module):
        def forward(self, x):
            return x

    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(30, 4, generator=g), torch.randn(12, 4, generator=g) + 0.5
    tm = KernelInceptionDistance(feature=Identity(), subset_size=12, subsets=50)
    tm.update(real, real=True)
    tm.update(fake, real=False)
    torch.manual_seed(0)
    mean, std = tm.compute()
    out = KernelDistance(Reference.of(real), fake, 4).value()
    assert out == {"kid_mean": float(mean), "kid_std": float(std)}
    full = KernelDistance(Reference.of(real), fake, 4).resampled(torch.ones(1, 12))["kid_mean"][0]
    # the unbiased full-set MMD^2 (equal set sizes: torchmetrics' formula applies)
    same_size = KernelDistance(Reference.of(real[:12]), fake, 4).resampled(torch.ones(1, 12))["kid_mean"][0]
    assert float(same_size) == pytest.approx(float(poly_mmd(real[:12], fake)), rel=1e-5)
    assert math.isfinite(float(full))


def test_resampled_copies_of_one_image_are_not_paired_with_each_other():
    """A resample of one image drawn twice has no pair of distinct images: its MMD sample term is empty,
    not k(x, x) (which would make every resample with a repeat look farther from the reference)."""
    ref = Reference.of(torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    samples = torch.tensor([[0.0, 0.0], [5.0, 5.0], [1.0, 1.0]])
    metric = CMMD(ref, samples, 3)
    twice = metric.resampled(torch.tensor([[2, 0, 1]]))["cmmd"][0]
    k = lambda a, b: float(rbf_kernel(a, b).sum())  # noqa: E731
    r = ref.features
    k_rr = (k(r, r) - 3) / 6
    within = 2 * 2 * k(samples[:1], samples[2:]) / (9 - 5)  # pairs (a, b) of distinct images: 2 x 1, both orders
    cross = (2 * k(r, samples[:1]) + k(r, samples[2:])) / (3 * 3)
    assert float(twice) == pytest.approx(SCALE * (k_rr + within - 2 * cross), rel=1e-5)


def test_set_metric_intervals_remove_the_resamples_bias_and_keep_the_metrics_range():
    """FID's resamples repeat images, which inflates FID: the percentile interval would sit wholly above
    the estimate; the shifted interval keeps the resamples' spread around it, and FID stays non-negative."""
    reps = np.arange(101.0) + 10  # resamples spread over 10..110, mean 60: 50 above an estimate of 10
    assert shifted_interval(10.0, reps) == pytest.approx((12.5 - 50, 107.5 - 50))
    assert shifted_interval(10.0, reps, bounds=FrechetDistance.columns["fid"].bounds) == pytest.approx((0.0, 57.5))
    assert shifted_interval(0.99, np.array([0.9, 1.0]), bounds=(0.0, 1.0))[1] == 1.0  # 1.0375 unclipped


def test_diversity_is_the_mean_pairwise_distance_within_each_prompt():
    features = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [1.0, 1.0], [2.0, 2.0]])
    prompt = torch.tensor([0, 0, 1, 1, 2])  # prompt 2 has one sample: left out
    assert PromptDiversity(features, prompt).value() == {"diversity": pytest.approx((5.0 + 0.0) / 2)}


class _MeanColour(FeatureNet):
    """Mean colour per channel: a feature network whose outputs are known, counting its calls."""

    name, units, dim, size = "mean-colour", "uint8 levels", 3, 8

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, images):
        self.calls += 1
        return images.float().mean((2, 3))

    def fingerprint(self) -> str:
        return "mean-colour:1"


def _image(path, colour, size):
    Image.new("RGB", size, colour).save(path)


def test_a_reference_folder_is_embedded_once_and_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDANCE_BENCH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "ref"
    folder.mkdir()
    for i, size in enumerate([(40, 30), (64, 64), (100, 20)]):  # mixed sizes: each resized to 8 first
        _image(folder / f"{i}.png", (10 * i, 20, 30), size)
    net = _MeanColour()
    first = reference_source(str(folder)).features_for(net, torch.device("cpu"))
    torch.testing.assert_close(first.features, torch.tensor([[0.0, 20, 30], [10, 20, 30], [20, 20, 30]]))
    calls = net.calls
    again = reference_source(str(folder)).features_for(net, torch.device("cpu"))
    assert net.calls == calls and torch.equal(again.features, first.features)  # read from the cache
    _image(folder / "1.png", (200, 20, 30), (64, 64))  # new content: recomputed
    changed = reference_source(str(folder)).features_for(net, torch.device("cpu"))
    assert net.calls > calls and changed.features[1, 0] == 200


def test_coco_captions_name_their_reference_images(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDANCE_BENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "val").mkdir()
    _image(tmp_path / "val" / "a.jpg", (255, 0, 0), (48, 32))
    _image(tmp_path / "val" / "b.jpg", (0, 0, 255), (48, 32))
    doc = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
           "annotations": [{"image_id": 1, "id": 5, "caption": "a red square"},
                           {"image_id": 2, "id": 6, "caption": "a blue square"}]}
    captions = tmp_path / "captions_val.json"
    captions.write_text(json.dumps(doc))
    ref = reference_source(str(captions), str(tmp_path / "val")).features_for(_MeanColour(), torch.device("cpu"))
    assert ref.num_samples == 2 and ref.features[0, 0] > 200 and ref.features[1, 2] > 200
    doc["images"].append({"id": 3, "file_name": "missing.jpg"})
    captions.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="are not in --reference-images"):
        reference_source(str(captions), str(tmp_path / "val"))


def test_a_reference_folder_without_images_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no images"):
        reference_source(str(tmp_path))


@pytest.fixture
def tiny_dinov2(monkeypatch):
    """timm's DINOv2 ViT shrunk to one block of width 24 (random weights): the real loading path."""
    import timm

    small = functools.partial(timm.create_model, embed_dim=24, depth=1, num_heads=2)
    monkeypatch.setattr(timm, "create_model", small)
    return small


def test_dinov2_loads_local_weights_and_embeds_images_of_any_size(tiny_dinov2, tmp_path):
    from safetensors.torch import save_file

    from bench.evaluators.dinov2 import DINOv2Net

    torch.manual_seed(0)
    model = tiny_dinov2("vit_small_patch14_dinov2", pretrained=False, num_classes=0, dynamic_img_size=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "d.safetensors"))
    torch.save(model.state_dict(), tmp_path / "d.pth")
    net = DINOv2Net(str(tmp_path / "d.safetensors"), "vit_small_patch14_dinov2")
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        out = net(images)
        x = nn.functional.interpolate(images.float() / 255, size=(224, 224), mode="bicubic", align_corners=False)
        mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        torch.testing.assert_close(out, model.eval()((x - mean) / std))
        assert net(torch.randint(0, 256, (1, 3, 512, 300), dtype=torch.uint8)).shape == (1, 24)
    assert torch.equal(DINOv2Net(str(tmp_path / "d.pth"), "vit_small_patch14_dinov2")(images), out)
    with pytest.raises(CheckpointError, match="does not fit"):
        DINOv2Net(str(tmp_path / "d.safetensors"), "vit_small_patch14_reg4_dinov2")  # has register tokens


def test_dinov2_refuses_downloads_and_files_that_are_not_weights(tiny_dinov2, tmp_path):
    from bench.evaluators.dinov2 import DINOv2Net

    with pytest.raises(CheckpointError, match="not set.*nothing is downloaded"):
        DINOv2Net(None)
    (tmp_path / "half.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\"")
    with pytest.raises(CheckpointError, match="half.safetensors: not a readable"):
        DINOv2Net(str(tmp_path / "half.safetensors"), "vit_small_patch14_dinov2")
    (tmp_path / "w.pth").write_bytes(b"0")
    with pytest.raises(ValueError, match="nothing is downloaded"):
        DINOv2Net(str(tmp_path / "w.pth"), "hf-hub:timm/vit_small_patch14_dinov2")


def test_zoo_networks_take_images_of_any_size():
    """Samples of a 512 px or 96 px model go through the 32 px domain and CLIP networks, resized as each
    network expects (the classifier: bilinear, antialiased; CLIP: bicubic, antialiased)."""
    from bench.evaluators.clip import CLIPNet
    from bench.evaluators.domain import DomainNet
    from guidance.zoo.load import load_eval_classifier
    from guidance.zoo.load import load_eval_clip

    classifier = load_eval_classifier()
    domain, clip = DomainNet(classifier), CLIPNet(load_eval_clip(), "zoo")
    images = torch.randint(0, 256, (2, 3, 96, 96), dtype=torch.uint8)
    with torch.no_grad():
        small = nn.functional.interpolate(images.float() / 127.5 - 1, size=(32, 32), mode="bilinear", antialias=True,
                                          align_corners=False)
        torch.testing.assert_close(domain(images), classifier.features(small))
        assert clip(images).shape == (2, clip.dim) and domain(torch.zeros(1, 3, 512, 512, dtype=torch.uint8)).shape == (1, 256)
        torch.testing.assert_close(clip(images).norm(dim=-1), torch.ones(2))

"""PickScore on a tiny random-weight transformers CLIP folder: the score against the authors' inference code
(processor, unit embeddings, logit_scale.exp() x text_embs @ image_embs.T), batch-size invariance, the
processor's preprocessing, and the up-front checks of the folders."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from bench.evaluators.pickscore import PickScore
from tests.bench.evaluators.clip_folders import save_clip_folder, tiny_clip
from guidance.checkpoints import CheckpointError

PROMPTS = ["a red car on a street", "an oil painting of a fox in the snow, highly detailed", "two cats", "soup"]


def images(n: int = 4) -> list[Image.Image]:
    g = np.random.default_rng(1)
    return [Image.fromarray(g.integers(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8), "RGB") for i in range(n)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_clip_folder(tmp_path_factory.mktemp("pickscore") / "PickScore_v1", tiny_clip())


@pytest.fixture(scope="module")
def network(folder):
    return PickScore.load_network(SimpleNamespace(pickscore_model=str(folder), pickscore_processor=None))


MEAN, STD = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])


def authors_pixels(im: Image.Image, size: int = 224) -> torch.Tensor:
    """CLIPImageProcessor as the authors ran it (transformers 4.27, PIL): shortest edge to 224 (the long side
    int(224 * long / short)), bicubic; centre crop at (h - 224) // 2; /255; OpenAI mean and std."""
    w, h = im.size
    new_long = int(size * max(w, h) / min(w, h))
    nw, nh = (size, new_long) if w <= h else (new_long, size)
    x = np.asarray(im.convert("RGB").resize((nw, nh), Image.BICUBIC), dtype=np.float32)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = (x[top:top + size, left:left + size] / 255 - MEAN) / STD
    return torch.from_numpy(x.transpose(2, 0, 1)).float()


def test_score_is_the_authors_formula(network, folder):
    """The README's calc_probs before the softmax, one prompt against its own image: CLIPModel's
    logits_per_text = logit_scale.exp() * text_embs @ image_embs.T of unit embeddings."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    ims = images()
    expected = []
    with torch.no_grad():
        for im, prompt in zip(ims, PROMPTS):
            text_inputs = tokenizer(prompt, padding=True, truncation=True, max_length=77, return_tensors="pt")
            out = model(**text_inputs, pixel_values=authors_pixels(im).unsqueeze(0))
            expected.append(out.logits_per_text[0, 0])
        got = network(ims, PROMPTS)
    assert model.logit_scale.exp().item() == pytest.approx(100, rel=1e-4)
    torch.testing.assert_close(got, torch.stack(expected), rtol=1e-5, atol=1e-4)


def test_batch_size_does_not_change_scores(network):
    """Prompts of different lengths padded together score as they do alone (the EOS state is pooled)."""
    ims = images()
    with torch.no_grad():
        whole = network(ims, PROMPTS)
        single = torch.cat([network([im], [p]) for im, p in zip(ims, PROMPTS)])
    torch.testing.assert_close(whole, single, rtol=1e-5, atol=1e-4)


def test_preprocessing_resizes_the_short_side_crops_and_normalises(network):
    """PIL resizing as the authors' transformers did (not transformers 5's torchvision default)."""
    for size in ((60, 30), (333, 517), (41, 50)):
        im = Image.fromarray(np.random.default_rng(size[0]).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        x = network.pixels([im])
        assert x.shape == (1, 3, 224, 224)
        torch.testing.assert_close(x[0], authors_pixels(im), rtol=0, atol=1e-5)


def test_processor_may_live_in_its_own_folder(folder, tmp_path):
    """The authors load the processor from laion/CLIP-ViT-H-14-laion2B-s32B-b79K, the model from PickScore_v1."""
    model_only = save_clip_folder(tmp_path / "model", tiny_clip(), with_processor=False)
    cfg = SimpleNamespace(pickscore_model=str(model_only), pickscore_processor=None)
    with pytest.raises(CheckpointError, match="--pickscore-model .*no image processor config"):
        PickScore.check_files(cfg)
    cfg.pickscore_processor = str(folder)
    PickScore.check_files(cfg)


def test_missing_and_mismatched_folders_are_one_line(tmp_path):
    cfg = SimpleNamespace(pickscore_model=str(tmp_path / "absent"), pickscore_processor=None)
    with pytest.raises(CheckpointError, match="--pickscore-model .*folder not found"):
        PickScore.check_files(cfg)
    wrong = save_clip_folder(tmp_path / "wrong", tiny_clip(projection_dim=16))
    config = (wrong / "config.json").read_text().replace('"projection_dim": 16', '"projection_dim": 24')
    (wrong / "config.json").write_text(config)
    with pytest.raises(CheckpointError, match="--pickscore-model .*does not load as a CLIPModel"):
        PickScore.load_network(SimpleNamespace(pickscore_model=str(wrong), pickscore_processor=None))


def test_without_transformers_it_is_refused_up_front(monkeypatch, folder):
    import bench.evaluators.preference as preference

    real = preference.importlib.util.find_spec
    monkeypatch.setattr(preference.importlib.util, "find_spec", lambda name, *a: None if name == "transformers"
                        else real(name, *a))
    with pytest.raises(CheckpointError, match="--metrics pickscore needs the transformers package"):
        PickScore.check_files(SimpleNamespace(pickscore_model=str(folder), pickscore_processor=None))

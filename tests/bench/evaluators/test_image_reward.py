"""ImageReward on a tiny random BLIP (ViT + cross-attending BERT + MLP) saved in the authors' key layout
(ImageReward.pt: blip.visual_encoder.*, blip.text_encoder.*, mlp.*): the score against BLIP's ViT and
med.py BERT written out here from those keys, ImageReward.score's tokenisation (max_length 35) and the
authors' mean and std; batch-size invariance; the preprocessing; and the up-front checks."""

from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from bench.evaluators.image_reward import ImageReward, ImageRewardNetwork, blip_tokenizer, load_image_reward
from guidance.checkpoints import CheckpointError

WORDS = ["a", "red", "car", "on", "the", "street", "two", "cats", "painting", "of", "fox", "soup", "blue", "sky"]
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
          "image_size": 224, "patch_size": 16, "layer_norm_eps": 1e-6, "hidden_act": "gelu"}
PROMPTS = ["a red car on the street", "painting of a fox", "two cats", "blue sky soup zebra"]  # zebra: [UNK]


def text_config(tokenizer) -> dict:
    return {"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "max_position_embeddings": 40,
            "pad_token_id": 0}


def to_authors_keys(state: dict) -> dict:
    """This test's own inverse of the key mapping: the names BLIP's vit.py and ImageReward.py give them."""
    vision = [(r"^embeddings\.class_embedding$", "cls_token"), (r"^embeddings\.position_embedding$", "pos_embed"),
              (r"^embeddings\.patch_embedding\.", "patch_embed.proj."), (r"^post_layernorm\.", "norm."),
              (r"^encoder\.layers\.(\d+)\.layer_norm1\.", r"blocks.\1.norm1."),
              (r"^encoder\.layers\.(\d+)\.layer_norm2\.", r"blocks.\1.norm2."),
              (r"^encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"blocks.\1.attn.qkv."),
              (r"^encoder\.layers\.(\d+)\.self_attn\.projection\.", r"blocks.\1.attn.proj."),
              (r"^encoder\.layers\.(\d+)\.mlp\.", r"blocks.\1.mlp.")]
    out = {}
    for key, value in state.items():
        if key.startswith("vision."):
            rest = key[len("vision."):]
            for pattern, replacement in vision:
                rest = re.sub(pattern, replacement, rest)
            out["blip.visual_encoder." + rest] = value.clone()
        elif key.startswith("text."):
            out["blip.text_encoder." + key[len("text."):]] = value.clone()
        else:
            out[key] = value.clone()
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """ImageReward.pt (a plain state dict, as THUDM ships it, with BLIP's unused projections and med.py's
    position_ids buffer) beside a BERT vocab.txt."""
    root = tmp_path_factory.mktemp("ImageReward")
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = blip_tokenizer(root)
    torch.manual_seed(5)
    net = ImageRewardNetwork(VISION, text_config(tokenizer), tokenizer)
    for p in net.parameters():  # random weights at a scale where every layer matters
        torch.nn.init.normal_(p, std=0.3)
    for layer in net.mlp.layers:  # scores of order 1, so that the authors' mean and std show at the tolerance
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=layer.in_features ** -0.5)
            torch.nn.init.zeros_(layer.bias)
    state = to_authors_keys(net.state_dict())
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(40).unsqueeze(0)
    state["blip.vision_proj.weight"], state["blip.text_proj.weight"] = torch.zeros(8, 32), torch.zeros(8, 32)
    torch.save(state, root / "ImageReward.pt")
    return root


@pytest.fixture(scope="module")
def network(folder):
    """Loaded as --image-reward-model loads it, with the tiny ViT in place of BLIP-L's and the folder's
    med_config.json giving the tiny BERT."""
    (folder / "med_config.json").write_text(json.dumps(text_config(blip_tokenizer(folder))))
    return load_image_reward(folder, VISION)


def layer_norm(x, sd, prefix, eps):
    return F.layer_norm(x, x.shape[-1:], sd[prefix + ".weight"], sd[prefix + ".bias"], eps)


def linear(x, sd, prefix):
    return F.linear(x, sd[prefix + ".weight"], sd[prefix + ".bias"])


def attention(q, k, v, heads, mask=None):
    b, n, d = q.shape
    split = lambda t: t.reshape(b, t.shape[1], heads, d // heads).transpose(1, 2)  # noqa: E731
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d // heads)
    if mask is not None:
        scores = scores + (1.0 - mask[:, None, None, :].float()) * -10000.0  # med.py's extended attention mask
    return (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(b, n, d)


def blip_vit(sd, x, heads, depth):
    """BLIP's vit.py VisionTransformer.forward: patches, [CLS], positions, pre-norm blocks, final norm."""
    p = "blip.visual_encoder."
    x = F.conv2d(x, sd[p + "patch_embed.proj.weight"], sd[p + "patch_embed.proj.bias"], stride=16)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd[p + "cls_token"].expand(len(x), -1, -1), x], 1) + sd[p + "pos_embed"]
    for i in range(depth):
        b = f"{p}blocks.{i}."
        h = layer_norm(x, sd, b + "norm1", 1e-6)
        q, k, v = linear(h, sd, b + "attn.qkv").chunk(3, dim=-1)  # qkv rows: all q, then all k, then all v
        x = x + linear(attention(q, k, v, heads), sd, b + "attn.proj")
        h = layer_norm(x, sd, b + "norm2", 1e-6)
        x = x + linear(F.gelu(linear(h, sd, b + "mlp.fc1")), sd, b + "mlp.fc2")
    return layer_norm(x, sd, p + "norm", 1e-6)


def med_bert(sd, ids, mask, image, heads, depth):
    """med.py BertModel in multimodal mode: embeddings, then per layer self-attention, cross-attention to
    the image, feed-forward, each followed by a residual post-LayerNorm."""
    p = "blip.text_encoder."
    x = sd[p + "embeddings.word_embeddings.weight"][ids] + sd[p + "embeddings.position_embeddings.weight"][:ids.shape[1]]
    x = layer_norm(x, sd, p + "embeddings.LayerNorm", 1e-12)
    for i in range(depth):
        b = f"{p}encoder.layer.{i}."
        a = attention(*(linear(x, sd, b + f"attention.self.{n}") for n in ("query", "key", "value")), heads, mask)
        x = layer_norm(x + linear(a, sd, b + "attention.output.dense"), sd, b + "attention.output.LayerNorm", 1e-12)
        q = linear(x, sd, b + "crossattention.self.query")
        k, v = (linear(image, sd, b + f"crossattention.self.{n}") for n in ("key", "value"))
        x = layer_norm(x + linear(attention(q, k, v, heads), sd, b + "crossattention.output.dense"), sd,
                       b + "crossattention.output.LayerNorm", 1e-12)
        h = F.gelu(linear(x, sd, b + "intermediate.dense"))
        x = layer_norm(x + linear(h, sd, b + "output.dense"), sd, b + "output.LayerNorm", 1e-12)
    return x


def authors_scores(folder, ims, prompts) -> torch.Tensor:
    """ImageReward.score, one prompt and image at a time, on ImageReward.pt's own keys."""
    sd = torch.load(folder / "ImageReward.pt", weights_only=True)
    tokenizer = blip_tokenizer(folder)
    preprocess = transforms.Compose([transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
                                     transforms.CenterCrop(224), lambda im: im.convert("RGB"), transforms.ToTensor(),
                                     transforms.Normalize((0.48145466, 0.4578275, 0.40821073),
                                                          (0.26862954, 0.26130258, 0.27577711))])
    out = []
    for im, prompt in zip(ims, prompts):
        tokens = tokenizer(prompt, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        image_embeds = blip_vit(sd, preprocess(im).unsqueeze(0), heads=2, depth=2)
        text = med_bert(sd, tokens["input_ids"], tokens["attention_mask"], image_embeds, heads=2, depth=2)
        x = text[:, 0, :]
        for i in (0, 2, 4, 6, 7):  # nn.Sequential(Linear, Dropout, Linear, Dropout, Linear, Dropout, Linear, Linear)
            x = linear(x, sd, f"mlp.layers.{i}")
        out.append((x[0, 0] - 0.16717362830052426) / 1.0333394966054072)
    return torch.stack(out)


def images(n: int = 4) -> list[Image.Image]:
    g = np.random.default_rng(4)
    return [Image.fromarray(g.integers(0, 256, (50, 40 + 6 * i, 3), dtype=np.uint8), "RGB") for i in range(n)]


def test_score_is_the_authors_computation(network, folder):
    ims = images()
    with torch.no_grad():
        got = network(ims, PROMPTS)
        expected = authors_scores(folder, ims, PROMPTS)
    assert expected.std() > 1e-3 and expected.abs().max() < 10  # distinct scores of order 1
    # float32 through two ViT and two BERT layers of width 32: ~1e-6; a slip in mean or std (1e-4) shows
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_batch_size_does_not_change_scores(network):
    ims = images()
    with torch.no_grad():
        whole = network(ims, PROMPTS)
        single = torch.cat([network([im], [p]) for im, p in zip(ims, PROMPTS)])
    torch.testing.assert_close(whole, single, rtol=1e-5, atol=1e-5)


def test_preprocessing_and_constants(network):
    """Resize of the shorter side to 224 (bicubic), centre crop, OpenAI mean/std; BLIP's added tokens."""
    x = network.preprocess(Image.new("RGB", (40, 80), (50, 100, 150)))
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])
    assert x.shape == (3, 224, 224)
    torch.testing.assert_close(x[:, 50, 50], (torch.tensor([50, 100, 150]) / 255 - mean) / std, rtol=0, atol=1e-4)
    assert network.tokenizer.bos_token == "[DEC]" and "[ENC]" in network.tokenizer.all_special_tokens
    tokens = network.tokenizer(["a red car"], padding="max_length", truncation=True, max_length=35)
    assert len(tokens["input_ids"][0]) == 35 and tokens["input_ids"][0][0] == network.tokenizer.cls_token_id


def test_folder_checks_are_one_line(folder, tmp_path):
    with pytest.raises(CheckpointError, match="--image-reward-model .*folder not found"):
        ImageReward.check_files(SimpleNamespace(image_reward_model=str(tmp_path / "absent")))
    (tmp_path / "ImageReward.pt").write_bytes((folder / "ImageReward.pt").read_bytes())
    with pytest.raises(CheckpointError, match=r"no BERT tokenizer \(vocab.txt\)"):
        ImageReward.check_files(SimpleNamespace(image_reward_model=str(tmp_path)))


def test_mismatched_checkpoint_is_one_line(folder, tmp_path, network):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    state = torch.load(broken / "ImageReward.pt", weights_only=True)
    del state["mlp.layers.7.weight"]
    torch.save(state, broken / "ImageReward.pt")
    with pytest.raises(CheckpointError, match=r"does not hold ImageReward \(BLIP-L \+ MLP\) weights \(missing "
                                              r"\['mlp.layers.7.weight'\]"):
        load_image_reward(broken, VISION)



def test_constants_are_the_authors():
    """ImageReward.py's mean and std, BLIP-L's ViT (blip.create_vit 'large', vit.py's LayerNorm eps), med_config."""
    import bench.evaluators.image_reward as module

    assert (module.REWARD_MEAN, module.REWARD_STD) == (0.16717362830052426, 1.0333394966054072)
    assert module.MAX_TOKENS == 35 and module.IMAGE_SIZE == 224
    assert module.VISION == {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                             "num_attention_heads": 16, "image_size": 224, "patch_size": 16, "layer_norm_eps": 1e-6,
                             "hidden_act": "gelu"}
    assert module.MED_CONFIG["vocab_size"] == 30524 and module.MED_CONFIG["layer_norm_eps"] == 1e-12

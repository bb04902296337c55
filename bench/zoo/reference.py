"""Write what the benchmarks read of the rendered emoji dataset, so a pip install runs them without the
emoji fonts and Unicode data that rendering needs: `python -m bench.zoo.reference` (run by `invoke train`).

- reference_clip_features.safetensors: CMMD's reference, the zoo's eval_clip embeddings of every 32 px render;
- reference_features_64.safetensors: eval_classifier_64 features of every 64 px render (the cascade's FID/KID);
- edit_sources.safetensors: the inpainting benchmark's source images, before their augmentation.

Each records the dataset checksum and the network's weights it was made from; tests/bench/zoo/test_reference.py
checks them against fresh renders where the fonts are installed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

from bench.runner.config import BenchConfig
from bench.evaluators.reference import Reference, embed
from guidance.sources.zoo_source import EVALUATORS, emoji_images
from bench.runner.scoring import feature_net
from bench.zoo.cascade import FEATURES_FILE, REFERENCE_64, rendered_features
from bench.zoo.editing import EDIT_SOURCES, SOURCE_SIZE, rendered_sources
from guidance.zoo.emoji_data import build_emoji_dataset
from guidance.zoo.load import ZOO_DIR, load_model
from guidance.checkpoints import file_sha256


def clip_reference(device: torch.device) -> tuple[Reference, str]:
    """CMMD's reference of the default CLIP (the zoo's eval_clip), and that network's fingerprint."""
    net = feature_net("clip", BenchConfig.from_preset("quick").scoring(), device)
    return Reference.of(embed(net, emoji_images(32), device)), net.fingerprint()


def features_64(device: torch.device) -> torch.Tensor:
    return rendered_features(load_model(ZOO_DIR / FEATURES_FILE, "eval_classifier", device), device)


def write(out: Path, device: torch.device) -> None:
    checksum = {size: build_emoji_dataset(size, progress=False).checksum for size in (32, 64)}
    reference, fingerprint = clip_reference(device)
    reference.save(out / EVALUATORS.reference_clip_features.name, fingerprint, dataset_checksum=checksum[32])
    save_file({"features": features_64(device).contiguous()}, str(out / REFERENCE_64.name),
              metadata={"weights_sha256": file_sha256(ZOO_DIR / FEATURES_FILE), "dataset_checksum": checksum[64]})
    images, identity = rendered_sources()
    save_file({"images": torch.from_numpy(images).contiguous(), "identity": torch.from_numpy(identity)},
              str(out / EDIT_SOURCES.name), metadata={"dataset_checksum": checksum[SOURCE_SIZE]})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ZOO_DIR), help="directory to write to (default: the zoo's weights)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    write(Path(args.out), torch.device(args.device))
    print(f"wrote {EVALUATORS.reference_clip_features.name}, {REFERENCE_64.name} and {EDIT_SOURCES.name} to {args.out}")


if __name__ == "__main__":
    main()

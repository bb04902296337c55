"""Dataset-derived files committed beside the zoo, so benchmarks need no dataset at run time.

- labels.json: the label space of the classifiers (identity, subgroup and group names and maps).
- reference_features.safetensors: evaluation-classifier features of every dataset image, plus the
  float64 sums that torchmetrics' FID keeps as its "real" state.
Run `python -m guidance.zoo.reference` after training the evaluation classifier.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from guidance.zoo.emoji_data import EmojiDataset, build_emoji_dataset
from guidance.zoo.load import ZOO_DIR, load_model


def write_labels(dataset: EmojiDataset, out: Path) -> None:
    labels = {
        "dataset_checksum": dataset.checksum,
        "identity_names": dataset.identity_names,
        "subgroup_names": dataset.subgroup_names,
        "group_names": dataset.group_names,
        "identity_subgroup": [int(v) for v in dataset.identity_subgroup],
        "identity_group": [int(v) for v in dataset.identity_group],
        "identity_codepoints": list(dataset.identity_codepoints),
    }
    (out / "labels.json").write_text(json.dumps(labels, ensure_ascii=False, indent=0))


@torch.no_grad()
def write_reference_features(dataset: EmojiDataset, out: Path) -> None:
    model = load_model(out / "eval_classifier.safetensors", "eval_classifier")
    images = torch.from_numpy(dataset.images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    feats = torch.cat([model.features(chunk) for chunk in images.split(256)]).double()
    save_file({"features": feats.half().contiguous(), "sum": feats.sum(0), "cov_sum": feats.T @ feats,
               "num_samples": torch.tensor(len(feats))}, str(out / "reference_features.safetensors"),
              metadata={"dataset_checksum": dataset.checksum, "feature_net": "eval_classifier"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=None, help="dataset .npz (default: build/cache the 32x32 emoji set)")
    parser.add_argument("--out", default=str(ZOO_DIR))
    args = parser.parse_args(argv)
    dataset = EmojiDataset.load(args.data) if args.data else build_emoji_dataset(32)
    out = Path(args.out)
    write_labels(dataset, out)
    write_reference_features(dataset, out)
    print(f"wrote labels.json and reference_features.safetensors to {out} (dataset {dataset.checksum[:12]})")


if __name__ == "__main__":
    main()

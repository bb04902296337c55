"""Repair an EMA export written by the trainer before EMA warm-up existed.

That trainer started the EMA (decay 0.999) at the first step's weights without warm-up, so after N
steps the export still held 0.999^(N-1) of the random initial weights (4.65% for the committed UNet's
3,067 steps, 21% for 1,551). The initial weights are reproducible (the trainer seeds torch right
before building the model), so their share can be removed and the rest renormalised, as Adam does
for its moment estimates. The script checks its work: it writes the corrected file only if the
eps-prediction MSE on a fixed batch of noised training images goes down.

    python scripts/debias_ema.py guidance/zoo/weights/unet.safetensors --data .devdata/emoji32.npz
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from guidance.zoo.emoji_data import EmojiDataset
from guidance.zoo.load import load_model, training_process
from guidance.checkpoints import read_metadata, save_model
from guidance.zoo.train import Data, denoising_report, make_job


def initial_weights(name: str, data: Data, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)  # what guidance.zoo.train.main does right before make_job
    return make_job(name, data, 1, torch.device("cpu"), small=False).model.state_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", help="the .safetensors file to repair (rewritten in place)")
    parser.add_argument("--data", required=True, help="the dataset .npz it was trained on")
    parser.add_argument("--name", default="unet", help="training job name (unet)")
    parser.add_argument("--decay", type=float, default=0.999)
    args = parser.parse_args(argv)
    path = Path(args.export)
    meta = read_metadata(path)
    info = meta["info"]
    if "ema_correction" in info:
        raise SystemExit(f"{path} was already corrected: {json.dumps(info['ema_correction'])}")
    data = Data.load(EmojiDataset.load(args.data), torch.device("cpu"))
    if data.dataset.checksum != info.get("dataset_checksum"):
        raise SystemExit(f"--data {args.data} is not the dataset {path} was trained on (checksum differs)")
    model = load_model(path, "unet")
    share = args.decay ** (int(info["steps"]) - 1)  # the first update copies, later ones mix in (1 - decay)
    init = initial_weights(args.name, data, int(info.get("seed", 0)))
    fixed = copy.deepcopy(model)
    fixed.load_state_dict({k: (v.float() - share * init[k].float()) / (1 - share) if v.is_floating_point() else v
                           for k, v in model.state_dict().items()})
    diffusion = training_process(model)
    key = "eps_mse_256_noised_training_images"
    before, after = (denoising_report(m, data, diffusion, n=256)[key] for m in (model, fixed))
    print(f"initial-weight share {share:.4f}; eps MSE on 256 noised training images {before:.4f} -> {after:.4f}")
    if not after < before:
        raise SystemExit("the correction did not lower the MSE: the initial weights were not reproduced; file unchanged")
    info["ema_correction"] = {"initial_weight_share": round(share, 6), "eps_mse_before": round(before, 5),
                              "eps_mse_after": round(after, 5), "by": "scripts/debias_ema.py"}
    save_model(fixed, path, meta["kind"], meta["config"], info)
    print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

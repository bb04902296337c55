"""Model cards for the zoo: one markdown file per checkpoint, written from the training record in it.

Also writes `unet_samples.png` (CFG samples of the diffusion model) and, when the dataset is
available, `dataset_grid.png` (the real renders the models were trained on).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


from guidance.zoo.load import ZOO_DIR, load_zoo
from guidance.zoo.store import read_metadata

ROLES = {
    "unet": "Text-conditional diffusion model (eps and learned-range variance), 32x32, cosine schedule, T=1000; "
            "captions dropped 15% of the time so classifier-free guidance works.",
    "classifier": "Noise-aware identity classifier p(y | x_t, t), trained on noised images at all t: drives classifier guidance.",
    "noised_clip": "Noised CLIP: image tower sees (x_t, t), trained contrastively on noised images: drives CLIP guidance.",
    "eval_clip": "Evaluation CLIP (open_clip ViT + text transformer) on clean images, different architecture and seed "
                 "from the guiding CLIP: used only to score.",
    "eval_classifier": "Clean-image identity classifier: its penultimate features serve FID/KID on this domain, its "
                       "top-1 accuracy serves as alignment accuracy.",
    "weak_unet": "Weak diffusion model for autoguidance (Karras et al. 2024): the same UNet family as `unet` at a "
                 "quarter of the width, trained for far fewer images, so its errors resemble the main model's, "
                 "only larger. It only guides `unet`; benchmarks never sample from it alone.",
}
DIFFUSION_MODELS = ("unet", "weak_unet")
SAMPLE_PROMPTS = 32


def sample_grid(out: Path, name: str = "unet", scale: float = 3.0, steps: int = 50) -> Path:
    """CFG samples of one diffusion model for the first prompts of the fixed emoji200 set, as a PNG grid."""
    from bench.emoji_prompts import emoji200
    from bench.run import to_hwc_uint8
    from guidance.guiders import make_guidance
    from guidance.protocols import Conditions
    from guidance.sampling import sample
    from guidance.zoo.emoji_data import save_grid

    zoo = load_zoo(out)
    texts = emoji200().texts()[:SAMPLE_PROMPTS]
    model = zoo.weak if name == "weak_unet" else zoo.denoiser
    x = sample(model, zoo.diffusion.respace(str(steps)), make_guidance("cfg", scale),
               Conditions(model=zoo.tokenizer(texts)), (3, 32, 32), range(len(texts)), seed=0)
    images = to_hwc_uint8(x)
    path = out / f"{name}_samples.png"
    save_grid(images, path, cols=8, scale=3)
    (out / f"{name}_samples.txt").write_text("\n".join(texts) + "\n")
    return path


def card(name: str, out: Path) -> str:
    meta = read_metadata(out / f"{name}.safetensors")
    info = meta["info"]
    lines = [f"# {name}", "", ROLES[name], "",
             "| field | value |", "|---|---|",
             f"| parameters | {info.get('parameters', 0):,} |",
             f"| training steps | {info.get('steps')} (batch {info.get('batch_size')}) |",
             f"| wall time | {info.get('wall_time_s')} s |",
             f"| device | {info.get('device')} (torch {info.get('torch')}) |",
             f"| seed | {info.get('seed')} |",
             f"| final losses | {json.dumps({k: round(v, 4) for k, v in info.get('final_losses', {}).items() if k not in ('step', 'time')})} |",
             f"| dataset | {info.get('dataset_size')} images, sha256 {info.get('dataset_checksum')} |",
             "| stored as | fp16 safetensors, config and this record in the file metadata |"]
    earlier = info.get("continued_from") or {}
    if earlier:
        this_run = earlier.get("this_run", {})
        evaluation = "; ".join(f"{k} {v}" for k, v in (earlier.get("evaluation") or {}).items())
        lines.append(f"| continued from | an export of {earlier.get('steps')} steps ({earlier.get('wall_time_s')} s on "
                     f"{earlier.get('device')}{'; ' + evaluation if evaluation else ''}); this run added "
                     f"{this_run.get('steps')} steps in {this_run.get('wall_time_s')} s |")
    if info.get("weights"):
        lines.append(f"| weights | {info['weights']} |")
    correction = info.get("ema_correction") or earlier.get("ema_correction")
    if correction:
        c, whose = correction, "" if info.get("ema_correction") else " (of the export continued from)"
        lines.append(f"| EMA correction{whose} | the EMA (no warm-up in the trainer then) held {c['initial_weight_share']:.2%} "
                     f"of the initial weights; removed by `{c['by']}` (eps MSE {c['eps_mse_before']} -> "
                     f"{c['eps_mse_after']}) |")
    lines.append("")
    if info.get("evaluation"):
        lines += ["## Evaluation", "", "```json", json.dumps(info["evaluation"], indent=1), "```", ""]
    grid = f"{name}_samples.png" if name in DIFFUSION_MODELS else "dataset_grid.png"
    if (out / grid).exists():
        what = (f"CFG s=3, 50 DDIM steps, the first 32 prompts of emoji200 (listed in {name}_samples.txt)"
                if name in DIFFUSION_MODELS else "real renders it was trained on")
        lines += ["## Samples", "", f"![{what}]({grid})", "", what, ""]
    lines += ["## Config", "", "```json", json.dumps(meta["config"], indent=1), "```", "",
              "Trained by `invoke train` (guidance/zoo/train.py) on the emoji dataset (Noto Color Emoji, OFL-1.1; "
              "OpenMoji, CC BY-SA 4.0; names from Unicode emoji-test.txt).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ZOO_DIR))
    parser.add_argument("--data", default=None, help="dataset .npz for dataset_grid.png (optional)")
    parser.add_argument("--no-samples", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.data:
        from guidance.zoo.emoji_data import EmojiDataset, save_grid

        save_grid(EmojiDataset.load(args.data).images[:64], out / "dataset_grid.png", cols=16, scale=2)
    names = [name for name in ROLES if (out / f"{name}.safetensors").exists()]
    if not args.no_samples:
        for name in DIFFUSION_MODELS:
            if name in names:
                print(f"wrote {sample_grid(out, name)}")
    for name in names:
        (out / f"{name}.md").write_text(card(name, out))
    print(f"wrote model cards for {', '.join(names)} to {out}")


if __name__ == "__main__":
    main()

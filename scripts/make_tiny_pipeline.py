"""Write a tiny random-weight diffusers pipeline folder, to try `--model diffusers:PATH` on the CPU.

    python -m scripts.make_tiny_pipeline /tmp/tiny-sd --family sd --scheduler shipped
    python -m bench run --model diffusers:/tmp/tiny-sd --guidance cfg,cfg-rescale,apg --steps 10

Nothing is downloaded: configs are the suite's (guidance.sources.tiny), the weights random (seeded),
the CLIP tokenizer a byte-level vocabulary written alongside. Images are 32 x 32 noise-like patterns:
the folder exercises the whole path, not image quality.
"""

from __future__ import annotations

import argparse

from guidance.sources.tiny import FAMILIES, SCHEDULERS, save_pipeline


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="where to write the pipeline (created)")
    p.add_argument("--family", default="sd", choices=FAMILIES,
                   help="sd (eps), sd-v (v-prediction), sdxl, sd3, dit, flux (FLUX.1-dev-shaped, guidance-distilled), "
                        "pixart (PixArt-Sigma-shaped), sana (Sana-shaped)")
    p.add_argument("--scheduler", default="shipped", choices=SCHEDULERS,
                   help="the checkpoint's own scheduler config (shipped) or one swapped in from it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-guiding-clip", action="store_true", help="leave out the tiny CLIP universal-clip follows")
    args = p.parse_args(argv)
    folder = save_pipeline(args.folder, args.family, args.scheduler, args.seed, not args.no_guiding_clip)
    print(f"wrote {folder}; try: python -m bench run --model diffusers:{folder} --guidance cfg --steps 10")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

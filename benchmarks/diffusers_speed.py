"""The suite's img/s against diffusers' own pipeline on the same tiny pipeline, side by side.

    OMP_NUM_THREADS=1 python -m benchmarks.diffusers_speed --family sd --steps 20 --batch 8 --rounds 7

Both sides do the same work per batch: encode the prompts (and the empty prompt), run CFG with the
conditional and unconditional branches in one batched forward per step, and decode the latents with
the VAE (the pipeline to a [0, 1] tensor, the suite to [-1, 1]). Rounds alternate between the two
(suite, pipeline, suite, ...) so drift in the machine's speed hits both alike; the table reports the
median of the rounds. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import torch

from guidance.guiders import make_guidance
from guidance.models import load_bundle
from guidance.samplers import sample
from guidance.sources.tiny import FAMILIES, save_pipeline

PROMPTS = ["a red cat on a mat", "two dogs playing in the snow", "a blue car", "a house by a lake"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="sd", choices=[f for f in FAMILIES if f != "dit"])
    p.add_argument("--folder", default=None, help="a pipeline folder (default: a tiny one written to a temp dir)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--scale", type=float, default=5.0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    folder = args.folder or save_pipeline(tempfile.mkdtemp(), args.family)
    device = torch.device(args.device)
    bundle = load_bundle(f"diffusers:{folder}", device)
    prompts = (PROMPTS * args.batch)[:args.batch]
    sampler = bundle.default_sampler
    sigmas = bundle.process.sigmas(args.steps)
    x_T = torch.randn(args.batch, *bundle.sample_shape, generator=torch.Generator().manual_seed(0)).to(device)

    def suite() -> torch.Tensor:
        with torch.no_grad():
            cond = bundle.conditions(prompts)
            x = sample(bundle.denoiser, bundle.process, sigmas, make_guidance("cfg", args.scale), cond,
                       bundle.sample_shape, list(range(args.batch)), sampler=sampler, x_T=x_T, clip_denoised=False,
                       device=device)
            return bundle.decode(x)

    def pipeline() -> torch.Tensor:
        return bundle.pipe(prompts, latents=x_T.clone(), guidance_scale=args.scale, num_inference_steps=args.steps,
                           output_type="pt").images

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return args.batch / (time.perf_counter() - start)

    suite(), pipeline()  # warm-up: allocator, lazy inits, the suite's cached empty-prompt encoding
    rates: dict[str, list[float]] = {"suite": [], "diffusers": []}
    for _ in range(args.rounds):
        rates["suite"].append(timed(suite))
        rates["diffusers"].append(timed(pipeline))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"{args.family} ({type(bundle.pipe.scheduler).__name__} / suite {sampler}), batch {args.batch}, "
          f"{args.steps} steps, CFG {args.scale}, {device}, torch threads {torch.get_num_threads()}")
    print(f"{'side':10s} {'median img/s':>12s} {'min':>8s} {'max':>8s}")
    for name, values in rates.items():
        print(f"{name:10s} {med[name]:12.2f} {min(values):8.2f} {max(values):8.2f}")
    print(f"suite / diffusers: {med['suite'] / med['diffusers']:.3f}")


if __name__ == "__main__":
    main()

"""invoke tasks: `invoke bench --guidance cfg` is the main job; plus train, report, regress, test, perf."""

from __future__ import annotations

import importlib.util
import shlex
import sys

from invoke import task

PY = shlex.quote(sys.executable)


def _flags(**options: object) -> str:
    parts = []
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        parts.append(flag if value is True else f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


@task(auto_shortflags=False, help={
    "guidance": "comma-separated methods (see --guidance list), 'all', or 'list'",
    "nproc": "processes to launch with torchrun", "shard": "K/N: sample shard K of N, merge later",
    "scales": "'1,3,6' for all methods, or 'cfg=1,3,6;clip=1,5,10'",
    "prompts": "built-in set (emoji200, emoji-all) or a prompt file (.txt, .csv, .tsv, .jsonl, COCO .json)",
    "preset": "quick (default, ~2 min on 2 CPU cores), full (GPU) or tiny",
    "model": "'emoji' (embedded zoo) or a directory of zoo checkpoints",
    "negative_prompt": "negative prompt for CFG and its variants (a prompt file's negative_prompt column overrides it)",
    "run_id": "run directory name; rerun with the same id to resume an interrupted run",
    "channels_last": "NHWC layout: on, off or auto (default: on for CUDA, off for CPU)",
    "compile": "torch.compile the networks", "cuda_graphs": "torch.compile with CUDA graphs (CUDA only)",
    "autotune": "with --compile/--cuda-graphs: inductor max-autotune (slow to compile)",
    "no_half_weights": "under bf16/fp16: let autocast re-cast the weights at every call (same samples; for timing)",
    "features": "feature networks for FID/KID/precision-recall: domain (default), inception, dinov2, clip",
    "dinov2_weights": "local DINOv2 weights for --features dinov2", "dinov2_arch": "its timm architecture",
    "reference": "real images: folder, COCO captions json (+ --reference-images DIR) or features .safetensors",
    "reference_images": "image folder of a COCO captions json reference",
    "bootstrap": "resamples per cell for set-metric intervals (default 200, 0: none)",
})
def bench(c, guidance="cfg", scales=None, prompts=None, prompt_limit=None, samples_per_prompt=None, negative_prompt=None,
          seeds=None,
          sampler=None, schedule=None, eta=None, steps=None, batch_size=None, device=None, dtype=None, model=None, clip_model=None,
          clip_pretrained=None, score_with_guiding_clip=False, fid_inception_weights=None, metrics=None, out=None,
          run_id=None, preset="quick", no_report=False, nproc=None, shard=None, channels_last="auto", compile=False,
          cuda_graphs=False, autotune=False, no_half_weights=False, features=None, dinov2_weights=None,
          dinov2_arch=None, reference=None, reference_images=None, bootstrap=None, task=None, masks=None,
          mask_file=None, inpaint_methods=None, repaint=None, cascade=False, upsampler_scale=None, upsample_aug=None):
    """Benchmark guidance methods over scales and seeds; prints a summary and writes reports/<run-id>/.

    --task inpaint (--masks, --inpaint-methods, --repaint J,R) runs the editing benchmark and --cascade
    the base -> upsampler cascade (docs/inpainting.md)."""
    args = _flags(guidance=guidance, scales=scales, prompts=prompts, prompt_limit=prompt_limit,
                  samples_per_prompt=samples_per_prompt, negative_prompt=negative_prompt, seeds=seeds, sampler=sampler, schedule=schedule, eta=eta,
                  steps=steps,
                  batch_size=batch_size, device=device, dtype=dtype, model=model, clip_model=clip_model,
                  clip_pretrained=clip_pretrained, score_with_guiding_clip=score_with_guiding_clip,
                  fid_inception_weights=fid_inception_weights, metrics=metrics, out=out, run_id=run_id,
                  preset=preset, no_report=no_report, nproc=nproc, shard=shard, compile=compile,
                  cuda_graphs=cuda_graphs, autotune=autotune, no_half_weights=no_half_weights, features=features,
                  dinov2_weights=dinov2_weights, dinov2_arch=dinov2_arch, reference=reference,
                  reference_images=reference_images, bootstrap=bootstrap, task=task, masks=masks,
                  mask_file=mask_file, inpaint_methods=inpaint_methods, repaint=repaint, cascade=cascade,
                  upsampler_scale=upsampler_scale, upsample_aug=upsample_aug)
    if channels_last not in ("auto", "on", "off"):
        raise SystemExit(f"--channels-last {channels_last!r}: use on, off or auto")
    if channels_last != "auto":
        args += " --channels-last" if channels_last == "on" else " --no-channels-last"
    c.run(f"{PY} -m bench run {args}", pty=False)


@task(help={"run": "run directory written by --shard jobs"})
def merge(c, run):
    """Merge the samples of independent --shard K/N jobs into one run, then score and report it."""
    c.run(f"{PY} -m bench merge {shlex.quote(run)}")


@task(help={"runs": "one or more run directories (comma-separated)", "out": "output directory"})
def report(c, runs, out=None):
    """Rebuild the HTML report of one run, or compare several runs side by side."""
    dirs = " ".join(shlex.quote(r) for r in runs.split(","))
    c.run(f"{PY} -m bench report {dirs} {_flags(out=out)}")


@task(help={"models": "subset of unet,classifier,noised_clip,eval_clip,eval_classifier,weak_unet",
            "budget": "seconds per model", "device": "cuda or cpu", "small": "tiny architectures (smoke test)",
            "init_from": "continue from the exported models in this directory (e.g. guidance/zoo/weights)"})
def train(c, models=None, budget=600, steps=None, batch=None, device=None, small=False, data=None, out=None,
          run_dir=None, init_from=None):
    """Rebuild the emoji dataset and train the embedded zoo (resumes from runs/train), then its reference files."""
    args = _flags(models=models, budget=budget, steps=steps, batch=batch, device=device, small=small, data=data,
                  out=out, run_dir=run_dir, init_from=init_from)
    c.run(f"{PY} -m guidance.zoo.train {args}")
    c.run(f"{PY} -m guidance.zoo.reference {_flags(data=data, out=out)}")
    c.run(f"{PY} -m bench.zoo_reference {_flags(out=out)}")
    c.run(f"{PY} -m bench.cards {_flags(out=out)}")


@task(help={"update": "rewrite the committed baseline", "reason": "why the baseline changes (required with --update)"})
def regress(c, update=False, reason=None):
    """CI quality gate: a fixed small CPU benchmark compared with the committed baseline."""
    c.run(f"{PY} -m bench.regress {_flags(update=update, reason=reason)}")


SYSTEM_PACKAGES = {  # Debian package -> file it provides (dataset-builder and browser tests need them)
    "fonts-noto-color-emoji": "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "unicode-data": "/usr/share/unicode/emoji/emoji-test.txt",
    "chromium": "/usr/bin/chromium",
}


@task
def system_deps(c):
    """Install the Debian packages the tests use (emoji fonts, Unicode data, Chromium) if missing."""
    import os
    from pathlib import Path

    missing = [pkg for pkg, path in SYSTEM_PACKAGES.items() if not Path(path).exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        print(f"missing system packages {missing}: install them with apt-get (as root); their tests will skip")
        return
    c.run("apt-get update -qq", env={"DEBIAN_FRONTEND": "noninteractive"})
    c.run("apt-get install -y -qq --no-install-recommends " + " ".join(missing), env={"DEBIAN_FRONTEND": "noninteractive"})


K_DIFFUSION = "k-diffusion==0.1.1.post1"  # parity reference; its samplers need none of its dependencies


@task(pre=[system_deps])
def test(c, fast=False):
    """Run the test suite (what CI runs); installs the k-diffusion reference lean (no dependencies) first."""
    if importlib.util.find_spec("k_diffusion") is None:
        c.run(f"{PY} -m pip install -q --no-deps {K_DIFFUSION}")
    c.run(f"{PY} -m pytest -q" + (" -m 'not slow'" if fast else ""))


@task(help={"compare": "fail if slower than the last saved run by this much, e.g. mean:10%",
            "device": "cpu or cuda, for the table (the pytest-benchmark steps run on the CPU)",
            "table_only": "print the time-split table only"})
def perf(c, compare=None, device=None, table_only=False):
    """Time split per guidance (table), then pytest-benchmark of one step per guidance (saved, compared)."""
    c.run(f"{PY} -m bench.perf {_flags(device=device)}")
    if not table_only:
        fail = f" --benchmark-compare --benchmark-compare-fail={compare}" if compare else ""
        c.run(f"{PY} -m pytest benchmarks -q --benchmark-enable --benchmark-autosave{fail} -p no:cacheprovider")


@task(auto_shortflags=False, help={"config": "glide-base (default), zoo or tiny", "batches": "comma-separated batch sizes",
            "guidance": "subset of none,cfg,classifier,clip", "steps": "sampler steps per sample",
            "sampler": "ddim (default), heun, dpmpp-2m, ...", "schedule": "sigma schedule (default leading)",
            "compile": "torch.compile the networks", "cuda_graphs": "torch.compile with CUDA graphs",
            "autotune": "with --compile/--cuda-graphs: inductor max-autotune (minutes of tuning)",
            "compare_half_weights": "time each row with half-precision and fp32 weights, side by side",
            "repeats": "timed runs per row (median)"})
def limit(c, config=None, batches=None, guidance=None, steps=None, device=None, compile=False, cuda_graphs=False,
          autotune=False, compare_half_weights=False, repeats=None, sampler=None, schedule=None):
    """GPU: img/s and TFLOP/s of guided sampling with a GLIDE-base-sized UNet, against the measured peak."""
    c.run(f"{PY} -m bench.limit " + _flags(config=config, batches=batches, guidance=guidance, steps=steps,
                                            sampler=sampler, schedule=schedule,
                                            device=device, compile=compile, cuda_graphs=cuda_graphs,
                                            autotune=autotune, compare_half_weights=compare_half_weights,
                                            repeats=repeats))

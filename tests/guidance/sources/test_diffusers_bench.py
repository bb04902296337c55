"""`bench run --model diffusers:PATH` through the harness: sampling, scoring, report files and resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from bench.runner.cli import main as cli_main
from guidance.models import load_bundle

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (the `diffusers` extra)")
DDIMScheduler = diffusers.DDIMScheduler
pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.slow]

PARTI = "Prompt\tCategory\tChallenge\tNote\na red cat on a mat\tAnimals\tColors\t\ntwo dogs\tAnimals\tCounting\t\n" \
        "a blue car\tVehicles\tColors\t\n"


def test_a_pipeline_runs_through_the_harness_and_resumes(tiny_pipeline, tmp_path, capsys):
    folder = shutil.copytree(tiny_pipeline("sd"), tmp_path / "sd")
    prompts = tmp_path / "parti.tsv"
    prompts.write_text(PARTI)
    args = ["run", "--model", f"diffusers:{folder}", "--guidance", "cfg,cfg-rescale,apg", "--scales",
            "cfg=1,4;cfg-rescale=4;apg=4", "--prompts", str(prompts), "--seeds", "0", "--steps", "3",
            "--batch-size", "2", "--out", str(tmp_path), "--run-id", "r"]
    assert cli_main(args) == 0  # default metrics: those that apply to a user's model without --reference
    out = capsys.readouterr().out
    assert "accuracy skipped" in out and "--reference DIR" in out and "report:" in out
    run = tmp_path / "r"
    assert (run / "index.html").is_file()
    by_category = pd.read_csv(run / "results_by_category.csv")  # PartiPrompts' Category and Challenge
    assert {"category", "Challenge"} <= set(by_category["category_column"])
    results = pd.read_csv(run / "results.csv")
    assert "fid" not in results.columns and results["clip_score"].notna().all()
    assert sorted(zip(results.guidance, results.scale)) == [("apg", 4.0), ("cfg", 1.0), ("cfg", 4.0), ("cfg-rescale", 4.0)]
    with np.load(run / "samples" / "cfg_s4_seed0.npz") as data:
        first = data["images"].copy()
    assert first.shape == (3, 32, 32, 3)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model_dir"] == f"diffusers:{folder}" and "unet/diffusion_pytorch_model.safetensors" in manifest["models"]
    stamp = (run / "samples" / "cfg_s4_seed0.npz").stat().st_mtime_ns

    assert cli_main(args) == 0  # resume: nothing left to sample
    assert (run / "samples" / "cfg_s4_seed0.npz").stat().st_mtime_ns == stamp

    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")  # other weights under the same folder
    assert cli_main(args) != 0  # refused: the run directory holds samples of the old weights
    assert "holds samples of other weights" in capsys.readouterr().err


def test_a_benchmark_sample_regenerates_in_diffusers(tiny_pipeline, tmp_path):
    """The docs' recipe: with --noise diffusers, sample k of a run is the pipeline called on its prompt with
    generator=torch.Generator("cpu").manual_seed(noise_seed) (per_sample.csv), and equals the latents that
    --save-latents wrote; here with --rescale-space model against the pipeline's guidance_rescale, and the
    SD 1.5 folder's PNDM swapped for the DDIM the suite runs. One thread on both sides; 1e-5 relative
    (tests/guidance/sources/test_diffusers_parity.py says where the bound comes from)."""
    import torch
    from safetensors.torch import load_file

    folder = tiny_pipeline("sd")
    prompts = tmp_path / "parti.tsv"
    prompts.write_text(PARTI)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli_main(["run", "--model", f"diffusers:{folder}", "--guidance", "cfg-rescale", "--scales",
                         "cfg-rescale=5", "--prompts", str(prompts), "--seeds", "4", "--steps", "10", "--batch-size", "2",
                         "--noise", "diffusers", "--save-latents", "--rescale-space", "model", "--metrics", "clip_score",
                         "--out", str(tmp_path), "--run-id", "r"]) == 0
        per_sample = pd.read_csv(tmp_path / "r" / "per_sample.csv")
        pipe = load_bundle(f"diffusers:{folder}").pipe
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        for k in (0, 2):
            row = per_sample[per_sample["index"] == k].iloc[0]
            theirs = pipe(PARTI.splitlines()[k + 1].split("\t")[0], guidance_scale=5.0, guidance_rescale=0.7,
                          num_inference_steps=10, output_type="latent",
                          generator=torch.Generator("cpu").manual_seed(int(row["noise_seed"]))).images
            ours = load_file(tmp_path / "r" / "samples" / "cfg-rescale_s5_seed0.latents" / f"{k}.safetensors")["latents"]
            assert float((ours - theirs).abs().max() / theirs.abs().max()) < 1e-5
    finally:
        torch.set_num_threads(before)

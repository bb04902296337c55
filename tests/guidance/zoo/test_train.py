"""`invoke train` on a tiny synthetic emoji set: fixed seeds, resuming, continuing from an export."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file

from guidance.zoo.emoji_data import EmojiDataset
from guidance.checkpoints import read_metadata
from guidance.zoo.train import main as train_main

NAMES = ["red apple", "green apple", "grinning face", "rocket", "dog face", "cat face"]


def synthetic_dataset(seed: int) -> EmojiDataset:
    rng = np.random.default_rng(seed)
    n = len(NAMES)
    return EmojiDataset(
        images=rng.integers(0, 256, (2 * n, 32, 32, 3), dtype=np.uint8), captions=NAMES * 2,
        identity=np.tile(np.arange(n), 2), subgroup=np.tile(np.arange(n) % 3, 2), group=np.tile(np.arange(n) % 2, 2),
        style=np.repeat([0, 1], n), identity_names=NAMES, subgroup_names=["a", "b", "c"], group_names=["g", "h"],
        style_names=["noto", "openmoji"], identity_subgroup=np.arange(n) % 3, identity_group=np.arange(n) % 2,
        identity_codepoints=["1F34E"] * n)


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    synthetic_dataset(0).save(path)
    return path


def run(data_path, out, run_dir, *extra: str, model: str = "weak_unet") -> dict:
    train_main(["--models", model, "--data", str(data_path), "--small", "--batch", "4", "--device", "cpu",
                "--out", str(out), "--run-dir", str(run_dir), *extra])
    return read_metadata(out / f"{model}.safetensors")


def test_fixed_seed_training_is_reproducible(data_path, tmp_path):
    first = run(data_path, tmp_path / "a", tmp_path / "ra", "--steps", "2")
    run(data_path, tmp_path / "b", tmp_path / "rb", "--steps", "2")
    assert first["info"]["steps"] == 2 and first["kind"] == "unet"
    a, b = load_file(tmp_path / "a" / "weak_unet.safetensors"), load_file(tmp_path / "b" / "weak_unet.safetensors")
    assert all(np.array_equal(a[k].float().numpy(), b[k].float().numpy()) for k in a)


@pytest.mark.parametrize("model", ["weak_unet", "unet"])  # the last iterate, and an EMA export
def test_training_resumes_exactly_from_its_checkpoint(data_path, tmp_path, capsys, model):
    run(data_path, tmp_path / "out", tmp_path / "run", "--steps", "2", model=model)
    assert (tmp_path / "run" / f"{model}.pt").exists()
    resumed = run(data_path, tmp_path / "out", tmp_path / "run", "--steps", "3", model=model)
    assert "resumed at step 2" in capsys.readouterr().out and resumed["info"]["steps"] == 3
    run(data_path, tmp_path / "straight", tmp_path / "run2", "--steps", "3", model=model)
    a = load_file(tmp_path / "out" / f"{model}.safetensors")
    b = load_file(tmp_path / "straight" / f"{model}.safetensors")
    assert all(np.array_equal(a[k].float().numpy(), b[k].float().numpy()) for k in a), \
        "2 steps + resume + 1 step must equal 3 steps in one go (model, optimiser, EMA and RNG restored)"


def test_ema_warms_up_and_follows_its_formula():
    import torch

    from guidance.zoo.train import EMA

    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.999)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10**6) == 0.999
    expected = 0.0
    for step in range(1, 30):
        with torch.no_grad():
            model.weight.fill_(float(step))
        ema.update(model)
        d = min(0.999, (1 + step - 1) / (10 + step - 1))
        expected = d * expected + (1 - d) * step
        assert ema.module.weight[0, 0].item() == pytest.approx(expected, rel=1e-6)
    # after 29 updates the initial weights (0) hold a negligible share, unlike a plain 0.999 EMA (97%)
    assert ema.module.weight[0, 0].item() > 20


def test_training_continues_from_an_export_and_counts_its_steps(data_path, tmp_path):
    run(data_path, tmp_path / "first", tmp_path / "r1", "--steps", "2")
    meta = run(data_path, tmp_path / "second", tmp_path / "r2", "--steps", "1", "--init-from", str(tmp_path / "first"))
    assert meta["info"]["steps"] == 3
    earlier = meta["info"]["continued_from"]
    assert earlier["steps"] == 2 and earlier["this_run"]["steps"] == 1
    key = "eps_mse_64_noised_training_images"  # the earlier export's record travels with the continued one
    assert earlier["evaluation"][key] == read_metadata(tmp_path / "first" / "weak_unet.safetensors")["info"]["evaluation"][key]
    assert meta["info"]["evaluation"][key] > 0
    run(data_path, tmp_path / "third", tmp_path / "r3", "--steps", "0", "--init-from", str(tmp_path / "first"))
    a, b = load_file(tmp_path / "first" / "weak_unet.safetensors"), load_file(tmp_path / "third" / "weak_unet.safetensors")
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), "the export's weights are the starting point"


def test_an_export_older_than_a_config_option_still_continues(data_path, tmp_path):
    """The committed UNet predates `head_channels`: a missing option compares at its default."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    run(data_path, tmp_path / "first", tmp_path / "r1", "--steps", "1")
    path = tmp_path / "first" / "weak_unet.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    config = json.loads(meta["config"])
    assert config.pop("head_channels") is None
    save_file(load_file(path), str(path), metadata={**meta, "config": json.dumps(config)})
    meta = run(data_path, tmp_path / "second", tmp_path / "r2", "--steps", "1", "--init-from", str(tmp_path / "first"))
    assert meta["info"]["steps"] == 2


def test_continuing_from_another_architecture_is_a_clear_error(data_path, tmp_path):
    run(data_path, tmp_path / "weak", tmp_path / "r1", "--steps", "1")
    shutil.copy(tmp_path / "weak" / "weak_unet.safetensors", tmp_path / "weak" / "unet.safetensors")
    with pytest.raises(SystemExit, match="error: --init-from .* config differs"):
        train_main(["--models", "unet", "--data", str(data_path), "--small", "--batch", "4", "--device", "cpu",
                    "--steps", "1", "--out", str(tmp_path / "o"), "--run-dir", str(tmp_path / "r2"),
                    "--init-from", str(tmp_path / "weak")])


def test_a_run_checkpoint_resumes_only_the_run_that_wrote_it(data_path, tmp_path, capsys):
    """Other data or another starting export under the same --run-dir is refused, not silently resumed
    (which would export the old run's weights under the new run's record)."""
    run(data_path, tmp_path / "first", tmp_path / "run", "--steps", "1")
    other_path = tmp_path / "other.npz"
    synthetic_dataset(1).save(other_path)
    with pytest.raises(SystemExit, match=r"error: .*\(dataset differ"):
        run(other_path, tmp_path / "o1", tmp_path / "run", "--steps", "2")
    with pytest.raises(SystemExit, match=r"error: .*\(init_from differ"):
        run(data_path, tmp_path / "o2", tmp_path / "run", "--steps", "2", "--init-from", str(tmp_path / "first"))
    assert run(data_path, tmp_path / "o3", tmp_path / "run", "--steps", "2")["info"]["steps"] == 2  # the same run resumes
    run(data_path, tmp_path / "o4", tmp_path / "run", "--steps", "5", "--budget", "0")
    assert "spent its --budget" in capsys.readouterr().out


def test_a_run_that_exports_into_its_init_folder_still_resumes(data_path, tmp_path, capsys):
    """`--init-from W` with the default `--out W`: the first export replaces the init file, and the
    same command with a larger --steps must resume, not be refused."""
    run(data_path, tmp_path / "w", tmp_path / "r0", "--steps", "1")
    for steps in ("2", "3"):
        meta = run(data_path, tmp_path / "w", tmp_path / "run", "--steps", steps, "--init-from", str(tmp_path / "w"))
    assert "resumed at step 2" in capsys.readouterr().out and meta["info"]["steps"] == 1 + 3


def test_mid_run_evaluations_export_the_best_scoring_weights_and_survive_a_resume(tmp_path):
    import torch
    from torch import nn

    from guidance.zoo.train import Job, train

    def weight(m: nn.Module) -> float:
        return float(m.weight.detach())

    def job() -> Job:
        model = nn.Linear(1, 1, bias=False)
        nn.init.zeros_(model.weight)

        def loss(g):  # pushes the weight up by Adam's ~lr per step
            return -model.weight.sum(), {}

        # a score that is best (lowest) at weight 0.02: the run passes it and gets worse
        return Job("toy", model, loss, {}, lr=0.01, weight_decay=0.0, warmup=1,
                   select=lambda m: (abs(weight(m) - 0.02), f"w {weight(m):.3f}", {"w": weight(m)}),
                   select_every=0.0)

    model, info = train(job(), 3, 1e9, tmp_path, torch.device("cpu"), 0)
    assert info["selection"]["exported_step"] == 2 and abs(float(model.weight) - 0.02) < 1e-3
    assert [e["step"] for e in info["selection"]["evaluations"]] == [0, 1, 2, 3]
    model, info = train(job(), 6, 1e9, tmp_path, torch.device("cpu"), 0)  # resumed: the best so far is kept
    assert info["selection"]["exported_step"] == 2 and abs(float(model.weight) - 0.02) < 1e-3
    assert [e["step"] for e in info["selection"]["evaluations"]] == [0, 1, 2, 3, 4, 5, 6]

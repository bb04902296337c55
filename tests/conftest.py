"""Fixtures shared by the tests of several modules."""

from __future__ import annotations

import pytest
import torch

from bench.runner.config import BenchConfig
from guidance.zoo.load import load_eval_classifier
from bench.runner.store import Expected, SampleStore, grid_cells, load_prompt_set


@pytest.fixture
def scored_run(tmp_path):
    """A factory of run directories holding one merged cell of blocky random images (scoring tests)."""
    def make(metrics: list[str], n_prompts: int = 3, per_prompt: int = 2, batch_size: int = 2):
        """A run directory holding one merged cell of blocky random images, with prompts whose labels are the
        evaluation classifier's own predictions for their first sample (so accuracy is 1 with the right mapping)."""
        g = torch.Generator().manual_seed(0)
        firsts = torch.rand(n_prompts, 3, 8, 8, generator=g) * 2 - 1
        firsts = firsts.repeat_interleave(4, 2).repeat_interleave(4, 3)
        with torch.no_grad():
            predicted = load_eval_classifier().heads(firsts)[0].argmax(-1).tolist()
        images = torch.cat([firsts[k:k + 1] + 0.02 * j / per_prompt for k in range(n_prompts) for j in range(per_prompt)])
        prompts = tmp_path / "p.csv"
        captions = ["red apple", "rocket", "grinning face", "flag: Japan", "dog face"][:n_prompts]
        prompts.write_text("prompt,label\n" + "".join(f"{t},{y}\n" for t, y in zip(captions, predicted)))
        cfg = BenchConfig.from_preset("tiny", guidance=["cfg"], scales={"cfg": [3.0]}, prompts=str(prompts),
                                      samples_per_prompt=per_prompt, seeds=[0], batch_size=batch_size, metrics=metrics,
                                      out=str(tmp_path), run_id="r")
        expected = Expected.of(load_prompt_set(cfg), n_prompts * per_prompt, per_prompt)
        cell = grid_cells(cfg)[0]
        store = SampleStore.of(cfg, tmp_path / "r", cell)
        store.write_batch(list(range(len(images))), images, expected)
        store.merge(expected)
        return cfg, cell, images, expected, predicted

    return make

"""Fixtures shared by the tests of several modules."""

from __future__ import annotations

import os

import pytest
import torch

from bench.runner.config import BenchConfig
from guidance.zoo.load import load_eval_classifier
from bench.runner.store import Expected, SampleStore, grid_cells, load_prompt_set

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N` (invoke test): the workers share the cores, so each gets its share of intra-op threads, and
    # so do the processes a test starts (which must compute with the same thread count as the test, whose
    # results they are compared with)
    THREADS = str(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
    os.environ.update(OMP_NUM_THREADS=THREADS, MKL_NUM_THREADS=THREADS)
    torch.set_num_threads(int(THREADS))


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `pytest -n N`, the end-to-end (slow) tests start first, longest first where `slow(seconds=...)`
    says how long, so the longest ones do not run alone at the end while the other workers wait (xdist's work
    stealing takes queued tests from the end of a worker's queue, so a long test queued late ran last)."""
    if hasattr(config, "workerinput"):  # an xdist worker (each collects, and the controller runs their order)
        items.sort(key=expected_order)  # stable: file order otherwise


def expected_order(item: pytest.Item) -> tuple[bool, float]:
    slow = item.get_closest_marker("slow")
    return slow is None, -float(slow.kwargs.get("seconds", 0)) if slow else 0.0

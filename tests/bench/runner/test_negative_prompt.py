"""Negative prompts from the harness: the prompt-file column, `--negative-prompt`, the sample key, the
conditions the zoo builds, and their cost (both CFG branches at every step, s = 1 included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.runner.cli import main as cli_main
from bench.runner.config import BenchConfig
from bench.prompts.readers import Prompt, PromptFileError, PromptSet, load_prompt_file
from bench.runner.run import run_benchmark
from bench.runner.store import Expected
from guidance.protocols import cond_where
from guidance.zoo.load import load_zoo


def test_prompt_files_carry_a_negative_prompt_column(tmp_path: Path) -> None:
    tsv = tmp_path / "p.tsv"
    tsv.write_text("Prompt\tnegative_prompt\tCategory\na cat\tblurry\tAnimals\na dog\t\tAnimals\n")
    cat, dog = load_prompt_file(tsv).prompts
    assert (cat.negative, dog.negative) == ("blurry", None)
    assert "negative_prompt" not in cat.meta  # not also a breakdown column
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a cat", "negative": "dark"}\n{"prompt": "a dog", "negative": null}\n')
    assert [p.negative for p in load_prompt_file(jsonl).prompts] == ["dark", None]
    jsonl.write_text('{"prompt": "a cat", "negative_prompt": 3}\n')
    with pytest.raises(PromptFileError, match="negative prompt 3 is not text"):
        load_prompt_file(jsonl)


def test_the_flag_fills_in_prompts_without_their_own_and_is_part_of_the_sample_key() -> None:
    prompts = PromptSet("p", (Prompt("a cat", negative="blurry"), Prompt("a dog")), "test")
    expected = Expected.of(prompts, 4, 2, negative_prompt="dark")
    assert list(expected.negatives) == ["blurry", "blurry", "dark", "dark"]
    assert list(Expected.of(prompts, 2, 1).negatives) == ["blurry", ""]
    stored = {"indices": np.arange(4), "prompts": expected.texts, "labels": expected.labels,
              "negatives": np.array(["blurry", "blurry", "dark", "other"])}
    assert list(expected.matches(_Npz(stored))) == [True, True, True, False]
    older = {k: v for k, v in stored.items() if k != "negatives"}  # saved before negative prompts: none
    assert list(Expected.of(prompts, 4, 2).matches(_Npz(older))) == [False, False, True, True]


class _Npz(dict):
    @property
    def files(self) -> list[str]:
        return list(self)


def test_rows_without_a_negative_prompt_take_the_null_condition() -> None:
    zoo = load_zoo()
    cond = zoo.conditions(["a cat", "a dog"], negative=["blurry", None])
    tokens = zoo.tokenizer(["a cat", "a dog"])
    assert torch.equal(cond.negative[0], zoo.tokenizer(["blurry"])[0])
    assert torch.equal(cond.negative[1], zoo.denoiser.null_cond(tokens)[1])
    assert zoo.conditions(["a cat"]).negative is None
    with pytest.raises(ValueError, match="1 negative prompts for 2 captions"):
        zoo.conditions(["a cat", "a dog"], negative=["blurry"])


def test_cond_where_picks_rows_of_tensors_and_dicts() -> None:
    a, b = torch.ones(3, 2), torch.zeros(3, 2)
    assert cond_where([True, False, True], a, b)[:, 0].tolist() == [1, 0, 1]
    mixed = cond_where([False, True, False], {"x": a}, {"x": b})
    assert mixed["x"][:, 1].tolist() == [0, 1, 0]


@pytest.mark.slow
def test_a_negative_prompt_changes_cfg_samples_and_costs_both_branches(tmp_path: Path) -> None:
    common = dict(guidance=["cfg"], scales={"cfg": [1.0, 3.0]}, prompt_limit=2, seeds=[0], steps=3, batch_size=2,
                  metrics=["clip_score"], out=str(tmp_path))
    plain = run_benchmark(BenchConfig.from_preset("tiny", run_id="plain", **common), progress=False)
    negative = run_benchmark(BenchConfig.from_preset("tiny", run_id="neg", negative_prompt="red apple", **common),
                             progress=False)
    for name in ("cfg_s1_seed0.npz", "cfg_s3_seed0.npz"):
        with np.load(plain / "samples" / name) as a, np.load(negative / "samples" / name) as b:
            assert not np.array_equal(a["images"], b["images"]), name  # s = 1 too: eps(neg) + 1 (eps_c - eps(neg))
            assert list(b["negatives"]) == ["red apple"] * 2
    passes = lambda run: pd.read_csv(run / "results.csv").set_index("scale")["network_passes_per_img"]  # noqa: E731
    assert passes(plain).to_dict() == {1.0: 3, 3.0: 6}
    assert passes(negative).to_dict() == {1.0: 6, 3.0: 6}


def test_an_empty_negative_prompt_is_refused_in_one_line(capsys, tmp_path: Path) -> None:
    assert cli_main(["run", "--negative-prompt", " ", "--preset", "tiny", "--out", str(tmp_path)]) == 2
    assert "--negative-prompt is empty" in capsys.readouterr().err

"""Small exact checks of the metric states, the statistics and the sample key (each written after a
mutation of that line went unnoticed by the end-to-end tests)."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from scipy import stats as sps
from torch import nn

from bench.runner.config import BenchConfig
from bench.evaluators import CLIPScore, LabelAccuracy, ScoringBatch
from bench.evaluators.base import Gathered
from bench.evaluators.domain import DomainNet
from bench.evaluators.throughput import Throughput
from bench.stats import mean_ci, pareto_front, summarize


class _FixedScorer(nn.Module):
    """Image embeddings given per image, one text embedding: cosines known in advance."""

    def __init__(self, images: torch.Tensor, text: torch.Tensor) -> None:
        super().__init__()
        self.images, self.text = images, text

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.images[: len(images)]

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.text.expand(len(texts), -1)


def test_clip_score_is_100_times_the_cosine_floored_at_zero():
    images = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]])  # cos with [1, 0]: 1, 0.6, -1
    metric = CLIPScore(_FixedScorer(images, torch.tensor([[1.0, 0.0]])))
    metric.update(ScoringBatch(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), ["a", "b", "c"]))
    scores = metric.compute()["clip_score"]
    assert scores.tolist() == pytest.approx([100.0, 60.0, 0.0])
    assert metric.cell_value(scores, chunk=2) == pytest.approx(100 * (1.0 + 0.6 + 0.0) / 3)


class _FixedClassifier(nn.Module):
    def __init__(self, identity: list[int], subgroup: list[int]) -> None:
        super().__init__()
        self.identity, self.subgroup = torch.tensor(identity), torch.tensor(subgroup)

    def heads(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return nn.functional.one_hot(self.identity, 4).float(), nn.functional.one_hot(self.subgroup, 3).float()


def test_label_accuracy_counts_identity_subgroup_and_group():
    # identities 0..3 -> subgroups [0, 1, 2, 2]; subgroups -> groups [0, 0, 1]
    classifier = _FixedClassifier(identity=[0, 2, 3, 1], subgroup=[1, 2, 1, 0])
    metric = LabelAccuracy(classifier, subgroup_of=[0, 1, 2, 2], group_of_subgroup=[0, 0, 1])
    metric.update(ScoringBatch(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), ["a"] * 4, torch.tensor([0, 1, 2, 3])))
    # true subgroups 0, 1, 2, 2 vs predicted 1, 2, 1, 0: none right; groups 0, 0, 1, 1 vs 0, 1, 0, 0: one right
    hits = metric.compute()
    assert hits["acc_identity"].tolist() == [1, 0, 0, 0] and hits["acc_group"].tolist() == [1, 0, 0, 0]
    assert {k: metric.cell_value(v, chunk=2) for k, v in hits.items()} == {"acc_identity": 0.25, "acc_subgroup": 0.0,
                                                                            "acc_group": 0.25}


def test_domain_features_see_uint8_images_in_minus_one_to_one():
    seen = []

    class Probe(nn.Module):
        config = dataclasses.make_dataclass("C", [("features", int), ("image_size", int)])(2, 32)

        def features(self, x):
            seen.append(x)
            return x.flatten(1)[:, :2]

    DomainNet(Probe(), weights="probe")(torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
    torch.testing.assert_close(seen[0], torch.tensor([[[[-1.0, 1.0]]]]))


@pytest.mark.parametrize("rows", [0, 1, 2])
def test_gathered_keeps_its_rows_two_dimensional(rows):
    """A one-prompt cell scores one image: torchmetrics squeezes a single value to a 0-d tensor, which scoring
    then indexed as [n, 1] (IndexError after all the sampling)."""
    bank = Gathered(1)
    if rows:
        bank.update(torch.arange(rows, dtype=torch.float32).unsqueeze(1))
    out = bank.gathered()
    assert out.shape == (rows, 1) and out[:, 0].tolist() == list(range(rows))


def test_throughput_adds_work_and_takes_the_slowest_process_time():
    a, b = Throughput(sync_on_compute=False), Throughput(sync_on_compute=False)
    a.update(images=8, seconds=10.0, network_passes=80, guide_passes=0, backward_passes=0, peak_mem_mb=100)
    b.update(images=8, seconds=12.0, network_passes=80, guide_passes=0, backward_passes=0, peak_mem_mb=300)
    a.merge_state(b)
    out = {k: float(v) for k, v in a.compute().items()}
    assert out["img_per_s"] == pytest.approx(16 / 12) and out["peak_mem_mb"] == 300
    assert out["network_passes_per_img"] == pytest.approx(10)


def test_covered_seconds_is_the_union_of_intervals():
    from bench.evaluators.throughput import covered_seconds

    assert covered_seconds(torch.tensor([[0.0, 2.0], [5.0, 6.0]])) == 3.0  # one after another: the sum
    assert covered_seconds(torch.tensor([[1.0, 4.0], [0.0, 2.0], [3.0, 3.5]])) == 4.0  # overlapping: the union
    assert covered_seconds(torch.tensor([[0.0, 10.0], [2.0, 3.0]])) == 10.0  # nested
    assert covered_seconds(torch.zeros(0, 2)) == 0.0


def _part(images: int, seconds: float, intervals=None) -> Throughput:
    part = Throughput(sync_on_compute=False)
    part.update(images=images, seconds=seconds, network_passes=10 * images, guide_passes=0, backward_passes=0,
                peak_mem_mb=1, intervals=intervals)
    return part


def test_throughput_of_jobs_side_by_side_and_in_turn():
    """Two shard jobs of 8 images and 10 s each: at once, the group made 16 images in 10 s; one after the
    other, 16 in 20 s (the slowest job's seconds would have claimed twice the real throughput)."""
    at_once = _part(8, 10.0, [[100.0, 105.0], [105.0, 110.0]])
    at_once.merge_state(_part(8, 10.0, [[100.5, 110.5]]))
    assert float(at_once.compute()["img_per_s"]) == pytest.approx(16 / 10.5)
    in_turn = _part(8, 10.0, [[100.0, 110.0]])
    in_turn.merge_state(_part(8, 10.0, [[200.0, 205.0], [205.0, 210.0]]))
    assert float(in_turn.compute()["img_per_s"]) == pytest.approx(16 / 20)
    assert float(in_turn.compute()["s_per_img"]) == pytest.approx(20 / 16)
    legacy = _part(8, 10.0, [[100.0, 110.0]])
    legacy.merge_state(_part(8, 12.0))  # a timing without intervals (older run): side by side, slowest seconds
    assert float(legacy.compute()["img_per_s"]) == pytest.approx(16 / 12)


def test_resumed_timing_keeps_every_interval(tmp_path):
    import json

    from bench.runner.sampling import save_throughput
    from bench.runner.store import Cell

    cell = Cell("cfg", 3.0, 0, 0)
    work = {"images": 4, "seconds": 2.0, "network_passes": 80.0, "guide_passes": 0.0, "backward_passes": 0.0,
            "peak_mem_mb": 1.0}
    save_throughput(tmp_path, cell, {**work, "intervals": [[0.0, 2.0]]}, "abc")
    save_throughput(tmp_path, cell, {**work, "intervals": [[50.0, 52.0]]}, "abc")  # resumed later
    saved = json.loads((tmp_path / "throughput.rank0.json").read_text())[cell.name]
    assert saved["intervals"] == [[0.0, 2.0], [50.0, 52.0]] and saved["images"] == 8
    (tmp_path / "throughput.rank0.json").write_text(json.dumps({cell.name: {**work, "cell_hash": "abc"}}))
    save_throughput(tmp_path, cell, {**work, "intervals": [[60.0, 62.0]]}, "abc")  # on top of an older file
    assert "intervals" not in json.loads((tmp_path / "throughput.rank0.json").read_text())[cell.name]
    # a process that owned no batch (twice) keeps an empty timing, and a later resume's intervals count
    idle = {**{k: 0 for k in work}, "intervals": []}
    other = Cell("cfg", 6.0, 0, 0)
    save_throughput(tmp_path, other, idle, "def")
    save_throughput(tmp_path, other, idle, "def")
    save_throughput(tmp_path, other, {**work, "intervals": [[70.0, 72.0]]}, "def")
    assert json.loads((tmp_path / "throughput.rank0.json").read_text())[other.name]["intervals"] == [[70.0, 72.0]]


def test_mean_ci_uses_the_requested_confidence():
    values = [1.0, 2.0, 4.0, 7.0]
    mean, lo, hi = mean_ci(values, confidence=0.8)
    sem = pd.Series(values).std(ddof=1) / 2
    assert hi - mean == pytest.approx(sps.t.ppf(0.9, df=3) * sem)


def test_summary_throughput_is_the_mean_over_seed_sets():
    rows = pd.DataFrame({"guidance": "cfg", "scale": 3.0, "seed_set": [0, 1], "n_samples": 8, "fid": [1.0, 2.0],
                         "clip_score": [3.0, 4.0], "img_per_s": [1.0, 3.0]})
    assert summarize(rows).iloc[0]["img_per_s"] == 2.0


def test_identical_points_are_both_on_the_pareto_front():
    table = pd.DataFrame({"clip_score": [30.0, 30.0, 20.0], "fid": [100.0, 100.0, 150.0]})
    assert list(pareto_front(table)) == [True, True, False]


def test_every_sample_field_changes_the_sample_key_and_nothing_else_does():
    plain = BenchConfig()
    changed = {"sampler": "ddpm", "schedule": "karras", "steps": 21, "eta": 0.5, "noise": "diffusers",
               "dtype": "bfloat16", "model": "/other/zoo", "model_fingerprint": "f" * 16}
    assert set(changed) == set(BenchConfig.SAMPLE_FIELDS)
    for field, value in changed.items():
        assert BenchConfig(**{field: value}).cell_hash("cfg", 3.0, 0) != plain.cell_hash("cfg", 3.0, 0), field
    # an unset --eta is the sampler's default: giving that default asks for the same samples
    assert plain.eta is None and BenchConfig(eta=0.0).cell_hash("cfg", 3.0, 0) == plain.cell_hash("cfg", 3.0, 0)
    ancestral = BenchConfig(sampler="euler-ancestral")
    assert BenchConfig(sampler="euler-ancestral", eta=1.0).cell_hash("cfg", 3.0, 0) == ancestral.cell_hash("cfg", 3.0, 0)
    for field, value in {"batch_size": 5, "device": "cuda", "prompt_limit": 7, "out": "elsewhere"}.items():
        assert BenchConfig(**{field: value}).cell_hash("cfg", 3.0, 0) == plain.cell_hash("cfg", 3.0, 0), field


def test_a_saved_sample_is_reused_only_with_its_own_prompt_and_label(tmp_path):
    import numpy as np

    from bench.prompts.readers import Prompt, PromptSet
    from bench.runner.store import Expected

    prompts = PromptSet("p", (Prompt("red apple", label=1), Prompt("rocket", label=2)), "test")
    expected = Expected.of(prompts, n=4, samples_per_prompt=2)  # indices 0, 1 -> apple; 2, 3 -> rocket
    stored = tmp_path / "part.npz"
    np.savez(stored, indices=np.array([0, 1, 2, 3, 4]), prompts=np.array(["red apple", "red apple", "rocket", "moon", "x"]),
             labels=np.array([1, 7, 2, 2, 0]))
    with np.load(stored) as data:
        assert list(expected.matches(data)) == [True, False, True, False, False]  # label, text, index out of range
    np.savez(stored, indices=np.array([0]), prompts=np.array(["red apple"]))  # an older file without labels
    with np.load(stored) as data:
        assert not expected.matches(data).any()


def test_half_precision_sample_keys_carry_the_numerics_version(monkeypatch):
    """bf16/fp16 samples saved before a change of half-precision numerics are not reused; fp32 ones are."""
    import bench.runner.config

    half, full = BenchConfig(dtype="bfloat16"), BenchConfig(dtype="float32")
    before = half.cell_hash("cfg", 3.0, 0), full.cell_hash("cfg", 3.0, 0)
    monkeypatch.setattr(bench.runner.config, "HALF_NUMERICS", bench.runner.config.HALF_NUMERICS + 1)
    assert half.cell_hash("cfg", 3.0, 0) != before[0] and full.cell_hash("cfg", 3.0, 0) == before[1]


def test_noise_mode_and_rescale_space_key_samples_apart_and_leave_default_keys_alone():
    """The zoo's default keys are those made before noise modes and rescale spaces (hash pinned), while
    --noise diffusers, --rescale-space model (for the methods that take it) and pipeline folders key apart."""
    from bench.runner.config import BenchConfig

    cfg = BenchConfig(guidance=["cfg", "cfg-rescale"])
    # the keys of main before noise modes and rescale spaces existed
    assert (cfg.cell_hash("cfg", 3.0, 0), cfg.cell_hash("cfg-rescale", 3.0, 0)) == ("69471e25e9ac41d7",
                                                                                   "a0d15f473f4b3b82")
    assert cfg.cell_hash("cfg", 3.0, 0) != dataclasses.replace(cfg, noise="diffusers").cell_hash("cfg", 3.0, 0)
    model_space = dataclasses.replace(cfg, rescale_space="model")
    assert model_space.cell_hash("cfg", 3.0, 0) == cfg.cell_hash("cfg", 3.0, 0)  # cfg takes no rescale
    assert model_space.cell_hash("cfg-rescale", 3.0, 0) != cfg.cell_hash("cfg-rescale", 3.0, 0)
    assert model_space.guidance_options("cfg-rescale") == {"rescale_space": "model"}
    assert dataclasses.replace(cfg, model="diffusers:/x").cell_hash("cfg", 3.0, 0) != dataclasses.replace(cfg, model="/x").cell_hash("cfg", 3.0, 0)
    with pytest.raises(ValueError, match="unknown --noise"):
        dataclasses.replace(cfg, noise="gpu").validate()


def test_the_diffusers_noise_mode_is_a_cpu_generator_seeded_with_the_samples_noise_seed():
    """--noise diffusers: row b is randn(shape, generator=torch.Generator("cpu").manual_seed(sample_seed(seed, i_b))),
    what a diffusers pipeline draws for one prompt from that generator; on the CPU the default mode draws the same."""
    from guidance.rng import SampleNoise, sample_seed

    noise = SampleNoise(4, [7, 2], "cpu", "diffusers").randn((4, 8, 8))
    for row, index in enumerate((7, 2)):
        expected = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(sample_seed(4, index)))
        assert torch.equal(noise[row], expected[0])
    assert torch.equal(noise, SampleNoise(4, [7, 2], "cpu").randn((4, 8, 8)))
    with pytest.raises(ValueError, match="unknown noise mode"):
        SampleNoise(4, [7], "cpu", "host")


def test_seed_sets_draw_independent_streams():
    """Sample i of seed set s and sample j of seed set s' share no stream unless (s, i) == (s', j)."""
    from guidance.rng import SampleNoise

    draws = {(seed, index): SampleNoise(seed, [index]).randn((16,))[0] for seed in range(3) for index in range(3)}
    keys = list(draws)
    for a in range(len(keys)):
        for b in range(a + 1, len(keys)):
            assert not torch.equal(draws[keys[a]], draws[keys[b]]), (keys[a], keys[b])


def test_scoring_pairs_each_sample_with_its_own_caption_and_label_across_chunks(tmp_path, scored_run):
    """Two samples per prompt, scored in chunks of 2: CLIP score, accuracy and FID equal one pass over all
    images with sample i conditioned on prompt i // 2 (a chunk scored against the first chunk's captions, a
    label looked up by i mod prompts, or float images fed to the uint8 FID path all showed here)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    from bench.evaluators.domain import DomainNet
    from bench.evaluators.reference import Reference
    from guidance.zoo.load import load_eval_classifier
    from bench.runner.store import to_hwc_uint8
    from bench.runner.scoring import make_scorer, score_cells
    from bench.tasks import make_task

    cfg, cell, images, expected, predicted = scored_run(["fid", "clip_score", "accuracy"])
    assert len(set(predicted)) == 3, "the prompts' labels must differ for the mapping to matter"
    row = score_cells(cfg.scoring(), make_task(cfg), tmp_path / "r", [cell], torch.device("cpu"), progress=False).results.iloc[0]
    assert row["acc_identity"] == 1.0
    stored = torch.from_numpy(to_hwc_uint8(images)).permute(0, 3, 1, 2)
    clip = CLIPScore(make_scorer(cfg.scoring(), torch.device("cpu")))
    clip.update(ScoringBatch(stored, [str(t) for t in expected.texts]))
    assert row["clip_score"] == pytest.approx(float(clip.compute()["clip_score"].double().mean()), rel=1e-5)
    fid = FrechetInceptionDistance(feature=DomainNet(load_eval_classifier()), reset_real_features=False)
    reference = Reference.load()  # torchmetrics' own FID, its real statistics set from the committed reference
    fid.real_features_sum, fid.real_features_cov_sum = reference.sum.clone(), reference.cov_sum.clone()
    fid.real_features_num_samples = torch.tensor(reference.num_samples)
    fid.update(stored, real=False)
    assert row["fid"] == pytest.approx(float(fid.compute()), rel=1e-4)


def test_kid_subsets_do_not_depend_on_the_global_random_state(tmp_path, scored_run):
    """Past 100 samples KID draws random subsets: from a fixed seed, so reruns (and process counts) agree
    whatever ran before."""
    from bench.runner.scoring import score_cells
    from bench.tasks import make_task

    cfg, cell, *_ = scored_run(["kid"], n_prompts=3, per_prompt=40, batch_size=32)
    torch.manual_seed(1)
    first = score_cells(cfg.scoring(), make_task(cfg), tmp_path / "r", [cell], torch.device("cpu"), progress=False).results.iloc[0]["kid_mean"]
    torch.manual_seed(2)
    second = score_cells(cfg.scoring(), make_task(cfg), tmp_path / "r", [cell], torch.device("cpu"), progress=False).results.iloc[0]["kid_mean"]
    assert first == second


@pytest.mark.parametrize("n, size, world", [(10, 2, 2), (120, 32, 3), (7, 3, 4)])
def test_score_chunks_of_ranks_in_rank_order_are_the_whole_file_in_order(n, size, world):
    """Metric states are gathered in rank order, so rank r's chunks must be the r-th contiguous run of the
    file: then KID's subsets (and FID's sums) see the samples in the one-process order."""
    from bench.runner.distributed import Shard
    from bench.runner.scoring import my_chunks

    single = my_chunks(n, size, Shard())
    ranks = [my_chunks(n, size, Shard(r, world, launched=True)) for r in range(world)]
    assert [c for chunks in ranks for c in chunks] == single
    assert single[0][0] == 0 and single[-1][1] == n


def test_per_sample_rows_pair_each_image_with_its_prompt_and_give_the_cell_means(tmp_path, scored_run):
    """per_sample.csv: one row per image with its global index and prompt position; its clip_score and
    accuracy columns average to the results row; set metrics get bootstrap intervals and diversity appears
    with two samples per prompt."""
    from bench.runner.scoring import score_cells
    from bench.tasks import make_task

    cfg, cell, images, expected, predicted = scored_run(["fid", "kid", "clip_score", "accuracy", "prdc",
                                                                    "diversity"], n_prompts=3, per_prompt=2)
    cfg = dataclasses.replace(cfg, bootstrap=30)
    scores = score_cells(cfg.scoring(), make_task(cfg), tmp_path / "r", [cell], torch.device("cpu"), progress=False)
    row, per = scores.results.iloc[0], scores.per_sample
    assert list(per.columns[:5]) == ["guidance", "scale", "seed_set", "index", "prompt_index"]
    assert list(per["index"]) == list(range(6)) and list(per["prompt_index"]) == [0, 0, 1, 1, 2, 2]
    assert per["clip_score"].mean() == pytest.approx(row["clip_score"], rel=1e-6)
    for col in ("acc_identity", "acc_subgroup", "acc_group"):
        assert set(per[col]) <= {0, 1} and per[col].mean() == pytest.approx(row[col])
    for col in ("fid", "kid_mean", "precision", "recall", "density", "coverage"):
        assert row[f"{col}_boot_lo"] <= row[f"{col}_boot_hi"], col
    assert row["diversity"] > 0 and "clip_score_boot_lo" not in row

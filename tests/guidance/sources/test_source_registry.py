"""Model sources are looked up by the prefix of `--model` (guidance.sources.registry)."""

from __future__ import annotations

import pytest

from bench.runner.config import BenchConfig
from bench.runner.preflight import preflight
from guidance.checkpoints import CheckpointError
from guidance.evaluation import domain_evaluators
from guidance.models import load_bundle, model_sampler
from guidance.sources import DIFFUSERS_PREFIX, diffusers_source, zoo_source
from guidance.sources.registry import SOURCES, ModelSource, register_source, source_of


def test_each_spec_goes_to_the_source_of_its_prefix():
    assert source_of("diffusers:/some/folder") == (diffusers_source.SOURCE, "/some/folder")
    assert source_of("emoji") == (zoo_source.SOURCE, "emoji")
    assert source_of("runs/my-zoo") == (zoo_source.SOURCE, "runs/my-zoo")  # no prefix: a zoo directory
    assert set(SOURCES) >= {"", DIFFUSERS_PREFIX}
    assert model_sampler("emoji") is None


def test_a_registered_source_is_what_load_bundle_uses():
    loaded = []
    toy = ModelSource("toy:", lambda rest, device, sampler: loaded.append((rest, device, sampler)) or "bundle", "a test source",
                      sampler=lambda rest: "euler")
    register_source(toy)
    try:
        assert load_bundle("toy:abc", "cpu", "ddim") == "bundle" and loaded == [("abc", "cpu", "ddim")]
        assert model_sampler("toy:abc") == "euler"
        with pytest.raises(ValueError, match="registered twice"):
            register_source(ModelSource("toy:", lambda rest, device, sampler: None, "another"))
    finally:
        del SOURCES["toy:"]


def test_a_zoo_spec_that_is_no_directory_says_so():
    with pytest.raises(Exception, match="model directory not found"):
        load_bundle("no/such/zoo")


def test_preflight_asks_the_specs_source_to_check_it_before_anything_loads(tmp_path):
    """A new source's up-front check is its own (`ModelSource.check`): the harness knows no source by name."""
    checked = []

    def check(rest: str, batch_size: int) -> None:
        checked.append((rest, batch_size))
        if rest == "bad":
            raise CheckpointError("weights.bin is a pickle; save it as safetensors")

    register_source(ModelSource("toy:", lambda rest, device, sampler: None, "a test source", check=check))
    try:
        cfg = BenchConfig.from_preset("tiny", model="toy:good", out=str(tmp_path), batch_size=3)
        preflight(cfg)
        with pytest.raises(ValueError, match="^--model toy:bad: weights.bin is a pickle; save it as safetensors$"):
            preflight(cfg.with_overrides(model="toy:bad"))
        assert checked == [("good", 3), ("bad", 3)]
    finally:
        del SOURCES["toy:"]


def test_the_up_front_domain_checks_ask_the_sources_declared_domain(tmp_path):
    """FID's two-sample minimum and the real-images-only refusal apply before loading only where the source
    declares the zoo evaluators' domain; another source's metrics are settled once its model loads."""
    one_sample = dict(out=str(tmp_path), prompt_limit=1, samples_per_prompt=1, metrics=["fid", "hpsv2"])
    assert zoo_source.SOURCE.domain == domain_evaluators().domain and diffusers_source.SOURCE.domain is None
    for domain, refused in ((None, False), (domain_evaluators().domain, True)):
        register_source(ModelSource("toy:", lambda rest, device, sampler: None, "a test source", domain=domain))
        try:
            cfg = BenchConfig.from_preset("tiny", model="toy:x", **one_sample)
            if refused:
                with pytest.raises(ValueError, match="apply to real images only"):
                    preflight(cfg)
                with pytest.raises(ValueError, match="FID and KID need at least 2 samples"):
                    preflight(cfg.with_overrides(metrics=["fid"]))
            else:
                preflight(cfg.with_overrides(metrics=["fid"]))
        finally:
            del SOURCES["toy:"]

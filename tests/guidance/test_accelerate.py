"""Speed-up flags: they must not change what the networks compute, and refuse what a device cannot run."""

from __future__ import annotations

import pytest
import torch

from bench.runner.cli import add_run_arguments, config_from_args
from bench.runner.config import BenchConfig
from guidance.accelerate import Acceleration
from guidance.analytic import GaussianMixture, MixtureDenoiser
from guidance.denoisers import NetworkDenoiser
from guidance.guiders import REGISTRY, ClassifierFreeGuidance, make_guidance
from guidance.process import VPDiscrete
from guidance.protocols import Conditions
from guidance.samplers import SAMPLERS, sample
from guidance.zoo.unet import TextUNet, UNetConfig
from bench.zoo.sized import CONFIGS, build_models, random_tokens

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_channels_last_defaults_by_device_and_can_be_forced():
    assert not Acceleration().uses_channels_last(CPU) and Acceleration().uses_channels_last(CUDA)
    assert Acceleration(channels_last=True).uses_channels_last(CPU)
    assert not Acceleration(channels_last=False).uses_channels_last(CUDA)
    assert Acceleration(cuda_graphs=True).compile_mode == "reduce-overhead"
    assert Acceleration(compile=True).compile_mode == "default" and Acceleration().compile_mode is None
    # cuDNN's algorithm search: on by default for CUDA, named in the run's description, meaningless on CPU
    assert "cudnn.benchmark True" in Acceleration().describe(CUDA)
    assert "cudnn.benchmark False" in Acceleration(cudnn_benchmark=False).describe(CUDA)
    assert "cudnn" not in Acceleration().describe(CPU)


def test_autotune_picks_inductors_max_autotune_modes_and_needs_compile():
    assert Acceleration(compile=True, autotune=True).compile_mode == "max-autotune-no-cudagraphs"
    assert Acceleration(cuda_graphs=True, autotune=True).compile_mode == "max-autotune"
    assert "torch.compile(max-autotune)" in Acceleration(cuda_graphs=True, autotune=True).describe(CUDA)
    with pytest.raises(ValueError, match="add --compile or --cuda-graphs"):
        Acceleration(autotune=True).apply(torch.nn.Linear(2, 2), CPU)
    with pytest.raises(ValueError, match="add --compile or --cuda-graphs"):
        BenchConfig(autotune=True).validate()


def test_cuda_graphs_on_cpu_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        Acceleration(cuda_graphs=True).apply(torch.nn.Linear(2, 2), CPU)
    with pytest.raises(ValueError, match="--cuda-graphs needs --device cuda"):
        BenchConfig(cuda_graphs=True, device="cpu").validate()


def test_channels_last_unet_computes_the_same_eps():
    torch.manual_seed(0)
    model = TextUNet(UNetConfig(channels=16, text_width=32, text_layers=1, vocab_size=50, dropout=0.0)).eval()
    for p in model.out.parameters():  # the zero-initialised output layer would make every output 0
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(3, 3, 32, 32), torch.tensor([5, 400, 990])
    tokens = torch.zeros(3, 17, dtype=torch.long)
    tokens[:, :3] = torch.tensor([5, 9, 1])
    tokens[:, -1] = 2
    with torch.no_grad():
        reference = model(x, t, tokens)
        assert reference.abs().max() > 0.1
        Acceleration(channels_last=True).apply(model, CPU)
        assert model.stem.weight.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x, t, tokens), reference, atol=1e-5, rtol=1e-5)


def test_compiled_model_gives_the_same_samples():
    process = VPDiscrete.from_schedule("linear", 1000)
    mixture = GaussianMixture(torch.tensor([[1.0, 0.0], [-1.0, 0.5]]), torch.tensor([0.3, 0.4]),
                              torch.tensor([0.5, 0.5]), process.alphas_cumprod)
    net, sigmas = MixtureDenoiser(mixture), process.sigmas(10, "respace")
    model = NetworkDenoiser(net, "eps")
    cond = Conditions(model=torch.arange(8) % 2)
    eager = sample(model, process, sigmas, ClassifierFreeGuidance(3.0), cond, (2,), range(8), seed=0)
    Acceleration(compile=True).apply(net, CPU)
    compiled = sample(model, process, sigmas, ClassifierFreeGuidance(3.0), cond, (2,), range(8), seed=0)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)


def test_compile_reaches_the_towers_clip_guidance_calls():
    """CLIP guidance calls encode_image / encode_text, not forward: those towers are what must compile."""
    from torch._dynamo.utils import counters

    size = CONFIGS["tiny"]
    clip = build_models(size, CPU)["clip"]
    torch._dynamo.reset()
    counters.clear()
    Acceleration(compile=True).apply(clip, CPU)
    x = torch.randn(2, 3, size.guide.image_size, size.guide.image_size)
    clip.encode_image(x, torch.zeros(2))
    clip.encode_text(random_tokens(2, size.guide.context_length, size.guide.vocab_size, CPU))
    assert counters["frames"]["ok"] >= 2, dict(counters["frames"])


def test_perf_and_limit_refuse_autotune_alone_in_one_line():
    from bench.tools import limit
    from bench.tools import perf

    for main, argv in ((limit.main, ["--config", "tiny", "--device", "cpu", "--profile"]),
                       (perf.main, ["--device", "cpu", "--guidance", "none"])):
        with pytest.raises(SystemExit, match="^error: --autotune tunes torch.compile's kernels; add --compile"):
            main([*argv, "--autotune"])


def test_cli_flags_reach_the_config_but_not_the_sample_key():
    import argparse

    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--compile", "--no-channels-last", "--no-cudnn-benchmark",
                                              "--autotune", "--no-half-weights"]))
    plain = config_from_args(parser.parse_args([]))
    assert cfg.acceleration() == Acceleration(channels_last=False, compile=True, cuda_graphs=False,
                                              cudnn_benchmark=False, autotune=True, half_weights=False)
    assert plain.acceleration() == Acceleration() and Acceleration().half_weights
    assert cfg.cell_hash("cfg", 3.0, 0) == plain.cell_hash("cfg", 3.0, 0)
    assert cfg.config_hash() == plain.config_hash()


@pytest.fixture(scope="module")
def zoo_cpu():
    from guidance.zoo.load import load_zoo

    return load_zoo(device="cpu")


@pytest.fixture(scope="module")
def zoos_with_half_weights():
    """Per dtype and rule: as Acceleration stores them on the CPU (transformer layers kept fp32, whose
    fused fast path CPU autocast leaves on) and as it stores them on CUDA (every layer)."""
    from guidance.zoo.load import load_zoo

    zoos, benchmark = {}, torch.backends.cudnn.benchmark
    for dtype in (torch.bfloat16, torch.float16):
        zoos[dtype, "cpu"] = load_zoo(device="cpu")
        zoos[dtype, "cpu"].accelerate(Acceleration(), CPU, dtype)
        zoos[dtype, "cuda"] = load_zoo(device="cpu")  # CUDA's rule, applied to CPU tensors (nothing runs on CUDA)
        zoos[dtype, "cuda"].accelerate(Acceleration(channels_last=False), CUDA, dtype)
    torch.backends.cudnn.benchmark = benchmark  # apply sets it for CUDA
    return zoos


# each factor at both levels: sampler, dtype, and the device's rule; CUDA's with the transformer fast
# path off, as CUDA autocast turns it off (the text encoder then takes CUDA's attention path)
COMBINATIONS = [("ddim", torch.bfloat16, "cuda"), ("ddpm", torch.float16, "cpu"), ("ddpm", torch.bfloat16, "cpu"),
                ("ddim", torch.float16, "cuda")]


# What the check compares is the networks' arithmetic under autocast, so what a method adds is which networks
# it calls and how: every method the zoo can run that calls a guiding model or reaches into the network's
# internals (universal-clip needs a latent bundle's decoder, flux-distilled a distilled model:
# tests/guidance/sources), and for the combiners, which call the denoiser on the same inputs as CFG and differ
# only in arithmetic outside the networks, none and cfg. Each runs under one combination: the two float16 ones
# (float16 has no fast CPU kernels: a run takes ~20x bfloat16's) by one method each, the bfloat16 ones in turn.
COMBINERS = {n for n, (cls, _) in REGISTRY.items() if not set(cls.needs) - {"pixel_space"}}
ZOO_METHODS = sorted(n for n, (cls, needs) in REGISTRY.items() if needs != "decoder_clip"
                     and "embedded_guidance" not in cls.needs and (n not in COMBINERS or n in ("none", "cfg")))


HALF = [c for c in COMBINATIONS if c[1] == torch.float16]
BF16 = [c for c in COMBINATIONS if c[1] == torch.bfloat16]
FLOAT16_BY = {"cfg": HALF[0], "clip": HALF[1]}  # the denoiser alone, and a guiding model's gradient besides it


def combination_for(index: int, name: str) -> tuple:
    if name in FLOAT16_BY:
        return FLOAT16_BY[name]
    turn = BF16[index % len(BF16):] + BF16[:index % len(BF16)]
    return next(c for c in turn if SAMPLERS[c[0]].renoise or not REGISTRY[name][0].renoises_unconditionally)


CASES = [(name, *combination_for(i, name)) for i, name in enumerate(ZOO_METHODS)]


def test_every_combination_is_run():
    assert all(any(c[1:] == combo for c in CASES) for combo in COMBINATIONS)
    assert all(sum(c[1:] == combo for c in CASES) >= 2 for combo in BF16)
    assert {"classifier", "clip", "autoguidance", "pag", "none", "cfg"} <= set(ZOO_METHODS) and "apg" in COMBINERS
    assert all(SAMPLERS[c[0]].renoise or not REGISTRY[n][0].renoises_unconditionally for n, *c in CASES)


@pytest.mark.parametrize("name, sampler, dtype, rule", CASES)
def test_weights_stored_in_half_precision_compute_what_autocast_did(zoo_cpu, zoos_with_half_weights, name, sampler,
                                                                     dtype, rule):
    """Under half-precision autocast, convolution and linear weights stored in that precision give the
    same samples bit for bit (autocast rounded them at every call); norms and embeddings stay fp32. One image:
    a second would run the same kernels (CPU float16 runs at ~1/20 of bfloat16's speed)."""
    cond = zoo_cpu.conditions(["grinning face"], torch.tensor([3]))

    def run(zoo, sampler, dtype):
        method = make_guidance(name, REGISTRY[name][0].typical_scale(), zoo.guiding_models())
        with torch.autocast("cpu", dtype=dtype):
            return sample(zoo.denoiser, zoo.process, zoo.process.sigmas(3), method, cond, zoo.sample_shape, range(1),
                          seed=5, sampler=sampler)

    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        torch.backends.mha.set_fastpath_enabled(rule == "cpu")
        stored = zoos_with_half_weights[dtype, rule]
        assert torch.equal(run(stored, sampler, dtype), run(zoo_cpu, sampler, dtype))
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def test_half_weights_convert_conv_and_linear_only(zoos_with_half_weights):
    from guidance.zoo.load import load_zoo

    for rule in ("cpu", "cuda"):
        stored = zoos_with_half_weights[torch.bfloat16, rule].unet
        assert {p.dtype for p in stored.parameters()} == {torch.bfloat16, torch.float32}
        assert stored.stem.weight.dtype == torch.bfloat16
        assert all(m.weight.dtype == torch.float32 for m in stored.modules()
                   if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.Embedding)))
        layer = next(m for m in stored.modules() if isinstance(m, torch.nn.TransformerEncoderLayer))
        assert layer.linear1.weight.dtype == (torch.bfloat16 if rule == "cuda" else torch.float32)
    assert "weights stored in bfloat16" in Acceleration().describe(CPU, torch.bfloat16)
    off = load_zoo(device="cpu")
    off.accelerate(Acceleration(half_weights=False), CPU, torch.bfloat16)  # --no-half-weights: the A/B switch
    assert {p.dtype for p in off.unet.parameters()} == {torch.float32}
    assert "weights stored" not in Acceleration(half_weights=False).describe(CPU, torch.bfloat16)


@pytest.mark.parametrize("name", ["apg", "cfg-rescale", "cfg", "cfg-dynamic-threshold"])
def test_methods_combine_half_precision_outputs_in_fp32(zoo_cpu, name):
    """Under fp16 autocast, APG's per-image norms and CFG-rescale's standard deviations overflowed fp16
    (NaN at the first step) when computed on the network's fp16 outputs; the outputs are upcast first."""
    from guidance.guiders import make_guidance

    cond = Conditions(model=zoo_cpu.tokenizer(["grinning face"]), labels=torch.tensor([3]))  # the norms are per image
    x, level = torch.zeros(1, 3, 32, 32), zoo_cpu.process.level(zoo_cpu.process.sigmas(2)[0])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        assert zoo_cpu.unet(x, level.timesteps(1, CPU), cond.model).dtype == torch.float16  # what is upcast
        pred = zoo_cpu.denoiser(x, level, cond.model)
    assert pred.eps.dtype == torch.float32 and pred.var_values.dtype == torch.float32
    method = make_guidance(name, 3.0, zoo_cpu.guiding_models())
    sigmas = zoo_cpu.process.sigmas(2)  # the overflow was at the first step; two check the step after it too
    reference = sample(zoo_cpu.denoiser, zoo_cpu.process, sigmas, method, cond, zoo_cpu.sample_shape, range(1), seed=1)
    with torch.autocast("cpu", dtype=torch.float16):
        half = sample(zoo_cpu.denoiser, zoo_cpu.process, sigmas, method, cond, zoo_cpu.sample_shape, range(1), seed=1)
    assert torch.isfinite(half).all()
    assert (half - reference).abs().mean() < 0.1  # fp16 rounding (0.002-0.035 here), not another image (~0.5)

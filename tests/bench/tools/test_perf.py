"""The perf tools on CPU: the near-limit script's FLOP accounting and the time-split table."""

from __future__ import annotations

import math

import pytest
import torch

from torch.utils.flop_counter import FlopCounterMode

from bench.tools import limit
from guidance.zoo.unet import TextUNet


@pytest.fixture(scope="module")
def tiny_table():
    return limit.benchmark("tiny", ["none", "cfg", "classifier", "clip"], [1, 2], steps=2, device=torch.device("cpu"),
                           dtype=torch.float32)


def test_limit_counts_flops_of_every_pass(tiny_table):
    flops = tiny_table["GFLOP_per_img"].groupby(level="guidance").first()
    # CFG runs the denoiser twice per step; gradient guidance adds the guide's forward and backward
    assert flops["cfg"] == pytest.approx(2 * flops["none"], rel=0.02)
    size = limit.CONFIGS["tiny"]
    classifier = limit.build_models(size, torch.device("cpu"))["classifier"]
    x = torch.randn(1, 3, size.unet.image_size, size.unet.image_size)
    with FlopCounterMode(display=False) as counter:
        classifier(x, torch.zeros(1))
    guide_forward = counter.get_total_flops() * 2 / 1e9  # per image over the 2 steps
    # input gradient only (weights frozen): the backward costs about one more forward
    extra = flops["classifier"] - flops["none"]
    assert 1.5 * guide_forward < extra < 3.5 * guide_forward
    assert flops["clip"] > flops["none"]
    assert set(tiny_table.index.get_level_values("batch")) == {1, 2}


def test_flop_count_includes_the_text_transformer_and_attention():
    """Per layer and caption: QKV, output and 4x MLP projections 24 L W^2, attention 4 L^2 W. Without
    the counting context, eval-mode inference took fused kernels that counted 0 (CPU, or CUDA fp32)."""
    from guidance.zoo.nn import TextTransformer

    L, W, layers, batch = 8, 32, 2, 3
    text = TextTransformer(64, L, W, layers, 4).eval()
    tokens = torch.randint(1, 64, (batch, L))
    with torch.no_grad(), limit.countable_kernels(), FlopCounterMode(display=False) as counter:
        text(tokens, torch.full((batch,), L - 1))
    assert counter.get_total_flops() == batch * layers * (24 * L * W**2 + 4 * L**2 * W)
    with torch.no_grad(), FlopCounterMode(display=False) as plain:
        text(tokens, torch.full((batch,), L - 1))
    assert plain.get_total_flops() < counter.get_total_flops()  # what the context is for (on this CPU)


def test_limit_rates_are_consistent(tiny_table):
    row = tiny_table.loc[("cfg", 2)]
    assert row.img_per_s > 0 and math.isfinite(row.TFLOP_per_s)
    assert row.TFLOP_per_s == pytest.approx(row.GFLOP_per_img * row.img_per_s / 1e3)
    assert row.limit_img_per_s == pytest.approx(row.img_per_s / row.share_of_peak)


def test_glide_base_config_matches_glide_size():
    """About GLIDE-base's 385M parameters (UNet plus text transformer), counted without allocating them."""
    with torch.device("meta"):
        model = TextUNet(limit.CONFIGS["glide-base"].unet)
    assert 330e6 < sum(p.numel() for p in model.parameters()) < 420e6


def test_limit_rejects_unknown_guidance():
    with pytest.raises(ValueError, match="this script measures"):
        limit.benchmark("tiny", ["apg"], [1], steps=1, device=torch.device("cpu"), dtype=torch.float32)


def test_perf_table_splits_time_for_cfg():
    from bench.tools.perf import measure
    from guidance.zoo.load import load_zoo

    row = measure("cfg", load_zoo(device="cpu"), batch=2, steps=2, device=torch.device("cpu"), repeats=1)
    assert row["network_passes_per_img"] == 4 and row["backward_passes_per_img"] == 0
    assert row["sampler_s"] > 0 and row["network_s"] > 0 and row["guidance_extra_s"] == 0
    assert row["img_per_s"] == pytest.approx(2 / row["sampler_s"])


def test_bare_loop_replays_the_networks_the_sampler_called():
    """The bare loop must call what the sampler called: autoguidance's second pass is the weak model's
    (a quarter of the main UNet's FLOPs), not another main-model pass; Heun's second evaluation per
    step is replayed too."""
    from bench.tools.perf import network_calls
    from guidance.zoo.load import load_zoo

    zoo = load_zoo(device="cpu")
    cond = zoo.conditions(["red apple", "rocket"])
    sigmas = zoo.process.sigmas(3)
    cfg = network_calls("cfg", zoo, sigmas, "ddim", cond, 2, torch.device("cpu"))
    assert [(model, args[0].shape[0]) for model, args in cfg] == [(zoo.unet, 4)] * 3
    auto = network_calls("autoguidance", zoo, sigmas, "ddim", cond, 2, torch.device("cpu"))
    assert [model for model, _ in auto] == [zoo.unet, zoo.weak_unet] * 3
    assert all(args[0].shape[0] == 2 for _, args in auto)
    heun = network_calls("cfg", zoo, sigmas, "heun", cond, 2, torch.device("cpu"))
    assert [(model, args[0].shape[0]) for model, args in heun] == [(zoo.unet, 4)] * 5  # 2 + 2 + 1 (last: Euler)


def test_side_by_side_timing_interleaves_rounds_and_takes_medians(monkeypatch):
    """A one-off slow call (a clock ramp, a background burst) must not move a variant's figure, and
    neither variant may always run first."""
    from bench.tools import perf

    clock, calls = [0.0], []
    costs = {"a": [1.0, 1.0, 9.0, 1.0], "b": [2.0, 2.0, 2.0, 2.0]}  # first entry: the warm-up call

    def run(name: str):
        def fn() -> None:
            clock[0] += costs[name][sum(c == name for c in calls)]
            calls.append(name)
        return fn

    monkeypatch.setattr(perf.time, "perf_counter", lambda: clock[0])
    seconds = perf.timed_side_by_side({"a": run("a"), "b": run("b")}, torch.device("cpu"), repeats=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert seconds == {"a": 1.0, "b": 2.0}


class _OpCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the aten ops that would launch device work (views and host-table reads excluded)."""

    FREE = {"view", "slice", "select", "expand", "split", "_local_scalar_dense", "unsqueeze", "reshape", "t"}

    def __init__(self) -> None:
        super().__init__()
        self.ops: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in self.FREE:
            self.ops[name] = self.ops.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("guidance", ["none", "cfg"])
def test_a_sampling_step_launches_only_the_arithmetic_of_the_update(guidance):
    """On a GPU every op outside the network is a kernel launch the bare loop does not pay (the
    overhead column of `invoke perf`). The batch shares its step, so the coefficients are host floats:
    no table indexing or casting per step, and a DDIM step (x0, clamp, eps, update, NaN flag) stays small.
    The noise levels are read from the process's float64 tables on the host, once per trajectory
    (they never reach the device), so they are counted apart and not charged to the step."""
    from guidance.guiders import make_guidance
    from guidance.process import VPDiscrete
    from guidance.samplers import sample

    size = limit.CONFIGS["tiny"]
    models = limit.build_models(size, torch.device("cpu"))
    assert models["unet"].learned_variance  # its variance channels are split off at every step
    cond = limit.conditions(size, 2, torch.device("cpu"))
    steps = 10
    process = VPDiscrete.from_schedule("cosine", 1000)
    sigmas = process.sigmas(steps, "leading")  # DDIM's fixed stride
    method = make_guidance(guidance, 3.0, models)
    with _OpCounter() as run:
        sample(limit.denoiser(models), process, sigmas, method, cond, (3, 16, 16), range(2), sampler="ddim")
    with _OpCounter() as tables:
        levels = process.levels(sigmas)
    assert all(isinstance(v, (float, bool)) for level in levels for k, v in vars(level).items()
               if not k.startswith("_"))  # host floats only
    passes = 2 if guidance == "cfg" else 1
    with _OpCounter() as net, torch.no_grad():
        models["unet"](torch.zeros(2 * passes, 3, 16, 16), torch.zeros(2 * passes, dtype=torch.long),
                       torch.cat([cond.model] * passes))
    extra = {k: (v - tables.ops.get(k, 0) - steps * net.ops.get(k, 0)) / steps for k, v in run.ops.items()}
    extra = {k: round(v, 2) for k, v in extra.items() if v > 0}
    assert "index" not in extra and "_to_copy" not in extra, extra
    # cfg adds its batching (cat of x and tokens) and its combination eps_u + s (eps_c - eps_u); the step's
    # [B] timesteps are made once (one fill) and shared by the guidance and the network
    assert sum(extra.values()) <= {"none": 14, "cfg": 19}[guidance], extra


def test_limit_profile_lists_the_convolutions_of_a_guided_step(capsys):
    assert limit.main(["--config", "tiny", "--device", "cpu", "--dtype", "float32", "--guidance", "cfg",
                       "--batches", "2", "--profile"]) == 0
    table = capsys.readouterr().out
    assert "tiny, cfg, batch 2, 3 DDIM steps" in table and "aten::conv2d" in table


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_limit_with_compile_runs_the_compiled_network(capsys, dtype):
    """The FLOPs are counted on the plain modules and the speed-ups applied after, so the timed runs
    go through the compiled graph (a GPU run that compiled nothing gave no speed-up at all). Under bf16
    the weights are stored in bf16 first (compiled, a fused transformer layer once met fp32 activations
    with bf16 weights on the CPU)."""
    from torch._dynamo.utils import counters

    from guidance.accelerate import Acceleration

    torch._dynamo.reset()
    counters.clear()
    table = limit.benchmark("tiny", ["cfg"], [1], steps=2, device=torch.device("cpu"), dtype=dtype,
                            acceleration=Acceleration(compile=True))
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]
    assert "graph(s) compiled from 1 of 1 frames" in capsys.readouterr().out
    assert table.loc[("cfg", 1)].img_per_s > 0


def test_perf_trace_counts_the_samplers_extra_work():
    """`bench.tools.perf --profile`: the sampler dispatches what the bare loop (and the guide) do plus its own
    step arithmetic: about 90 operators per step for none and 120 for CFG, bounded so that a per-step
    regression shows; and the events that make up the difference are named."""
    from bench.tools.perf import trace_table
    from guidance.zoo.load import load_zoo

    zoo = load_zoo(device="cpu")
    table, extra = trace_table("cfg", zoo, batch=2, steps=3, device=torch.device("cpu"))
    assert table.loc["bare", "aten_ops"] > 1000  # the network's operators are counted
    assert 60 < table.loc["extra_per_step", "aten_ops"] < 160
    # CFG's batched branches cat x and the captions at each step (the doubled batch's timesteps are made
    # whole, not cat); the initial noise and the NaN check stack once each: the sampler's own work, told
    # apart from the network's cats (skip connections)
    assert extra.loc["aten::cat", "extra_calls"] == 2 * 3 + 2
    assert extra["extra_host_s"].is_monotonic_decreasing
    # a guide's forward and backward are its own row, not the sampler's extra
    guided, _ = trace_table("classifier", zoo, batch=2, steps=3, device=torch.device("cpu"))
    assert "guide" in guided.index and guided.loc["guide", "aten_ops"] > 1000
    assert 40 < guided.loc["extra_per_step", "aten_ops"] < 160
    assert {"gc_runs", "gc_s"} <= set(table.columns)


def test_trace_times_garbage_collections():
    """A collection inside the traced call is counted with its pause (none outside it is)."""
    import gc

    from bench.tools.perf import trace

    gc.collect()
    row, _ = trace(lambda: gc.collect(), torch.device("cpu"))
    assert row["gc_runs"] == 1 and 0 < row["gc_s"] < row["wall_s"]
    quiet, _ = trace(lambda: sum(range(10)), torch.device("cpu"))
    assert quiet["gc_runs"] == 0 and quiet["gc_s"] == 0


def test_limit_compares_half_and_fp32_weights_side_by_side(capsys):
    """`--compare-half-weights`: every row twice, the same networks stored in bf16 and in fp32, timed in
    one process (the ratio the 45%-of-peak question needs); the FLOPs are the same, the storage is not."""
    table = limit.benchmark("tiny", ["cfg"], [1, 2], steps=2, device=torch.device("cpu"), dtype=torch.bfloat16,
                            repeats=2, compare_half_weights=True)
    assert list(table.index) == [("cfg", b, w) for b in (1, 2) for w in ("half", "fp32")]
    assert table["GFLOP_per_img"].nunique() == 1 and (table["img_per_s"] > 0).all()
    out = capsys.readouterr().out
    assert "weights stored in bfloat16 vs contiguous;" in out
    size = limit.CONFIGS["tiny"]
    half, fp32 = (limit.build_models(size, torch.device("cpu")) for _ in range(2))
    limit.accelerate(half, limit.Acceleration(), torch.device("cpu"), torch.bfloat16)
    limit.accelerate(fp32, limit.Acceleration(half_weights=False), torch.device("cpu"), torch.bfloat16)
    assert limit.model_bytes(half) < 0.8 * limit.model_bytes(fp32)
    with pytest.raises(ValueError, match="add --dtype bfloat16"):
        limit.benchmark("tiny", ["cfg"], [1], steps=1, device=torch.device("cpu"), dtype=torch.float32,
                        compare_half_weights=True)
    with pytest.raises(SystemExit, match="drop --half-weights"):
        limit.main(["--config", "tiny", "--device", "cpu", "--compare-half-weights", "--no-half-weights"])


@pytest.mark.parametrize("argv", [["--device", "cdua"], ["--device", "cuda:7"]])
def test_perf_and_limit_name_a_bad_device_in_one_line(argv, capsys):
    from bench.tools import perf

    if "cuda:7" in argv and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    for main in (perf.main, limit.main):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--batch" if main is perf.main else "--batches", "1"])
        message = str(exit_.value)
        assert message.startswith(f"error: --device {argv[1]!r}" if "cdua" in argv else "error: --device cuda:7")
        assert "\n" not in message and ("cuda:N" in message or "CUDA device" in message)


@pytest.mark.parametrize("argv, message", [
    (["--guidance", ","], "--guidance ',': names no method"),
    (["--guidance", "cfg,foo"], "--guidance 'cfg,foo': unknown ['foo']"),
    (["--steps", "1001"], "1..1000"),
])
def test_perf_and_limit_name_bad_arguments_in_one_line(argv, message):
    from bench.tools import perf

    for main in (perf.main, limit.main):
        with pytest.raises(SystemExit) as exit_:
            main(["--device", "cpu", *argv] + (["--config", "tiny"] if main is limit.main else []))
        assert message in str(exit_.value) and "\n" not in str(exit_.value)


@pytest.mark.parametrize("flag, value", [("--batch", "0"), ("--steps", "-2"), ("--repeats", "0"), ("--batches", "1,a")])
def test_perf_and_limit_take_counts_of_one_or_more(flag, value, capsys):
    from bench.tools import perf

    main = limit.main if flag == "--batches" else perf.main
    with pytest.raises(SystemExit):
        main(["--device", "cpu", flag, value])
    assert f"argument {flag}:" in capsys.readouterr().err

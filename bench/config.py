"""Benchmark configuration: presets, default scale grids and validation before any sampling starts."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bench.evaluators import DINOV2_ARCH, FEATURE_NETS, METRIC_NAMES
from bench.evaluators.base import NOTHING_DOWNLOADED, check_readable
from guidance.accelerate import Acceleration, checked_device
from guidance.guiders import REGISTRY
from guidance.process import SCHEDULES
from guidance.samplers import SAMPLERS

# Scales per guidance. CFG uses the GLIDE/diffusers convention (1 = no guidance); gradient methods
# use the gradient scale (0 = no guidance). `none` ignores its scale.
QUICK_SCALES: dict[str, list[float]] = {"none": [0.0], "cfg": [1.0, 3.0, 6.0], "classifier": [1.0, 5.0, 10.0],
                                        "clip": [1.0, 5.0, 10.0],
                                        # CFG-convention scales (1 = no guidance); s = 1 equals `cfg` at 1
                                        "cfg-interval": [3.0, 6.0], "cfg-rescale": [3.0, 6.0],
                                        "apg": [6.0, 10.0], "cfg-zero-star": [3.0, 6.0],
                                        "cfg-dynamic-threshold": [6.0, 10.0], "autoguidance": [1.5, 2.5],
                                        "cfg-pp": [0.2, 0.6],  # CFG++'s lambda in [0, 1]
                                        "tcfg": [3.0, 6.0], "mambo-g": [3.0, 6.0], "fdg": [3.0, 6.0],
                                        "apg-mix": [6.0, 10.0], "cfg-increasing": [3.0, 6.0], "cfg-early": [3.0, 6.0],
                                        # the perturbed pass's scale (0 = none), CFG off (cfg_scale 1)
                                        "pag": [1.5, 3.0], "seg": [1.5, 3.0], "slg": [1.5, 3.0],
                                        "nag": [2.0, 4.0],
                                        "sag": [0.5, 1.0],  # SAG's scale (0 = none), CFG off
                                        "flux-distilled": [2.5, 3.5],  # the embedded strength (1 = none)  # NAG's phi (0 = none; the reference's nag_scale - 1)
                                        "universal-clip": [5.0, 20.0]}  # gradient scale (0 = none)
FULL_SCALES: dict[str, list[float]] = {"none": [0.0], "cfg": [1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0],
                                       "classifier": [0.5, 1.0, 2.0, 5.0, 10.0, 20.0],
                                       "clip": [0.5, 1.0, 2.0, 5.0, 10.0, 20.0],
                                       "cfg-interval": [1.5, 2.0, 3.0, 4.0, 6.0, 8.0],
                                       "cfg-rescale": [1.5, 2.0, 3.0, 4.0, 6.0, 8.0],
                                       "apg": [2.0, 4.0, 6.0, 8.0, 10.0, 15.0],
                                       "cfg-zero-star": [1.5, 2.0, 3.0, 4.0, 6.0, 8.0],
                                       "cfg-dynamic-threshold": [2.0, 4.0, 6.0, 8.0, 10.0, 15.0],
                                       "autoguidance": [1.25, 1.5, 2.0, 2.5, 3.0],
                                       "cfg-pp": [0.2, 0.4, 0.6, 0.8],
                                       "tcfg": [1.5, 2.0, 3.0, 4.0, 6.0, 8.0],
                                       "mambo-g": [1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0],
                                       "fdg": [1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0],
                                       "apg-mix": [2.0, 4.0, 6.0, 8.0, 10.0, 15.0],
                                       "cfg-increasing": [1.5, 2.0, 3.0, 4.0, 6.0, 8.0],
                                       "cfg-early": [1.5, 2.0, 3.0, 4.0, 6.0, 8.0],
                                       "pag": [0.5, 1.0, 2.0, 3.0, 5.0], "seg": [0.5, 1.0, 2.0, 3.0, 5.0],
                                       "slg": [0.5, 1.0, 2.0, 3.0, 5.0],
                                       "nag": [1.0, 2.0, 3.0, 4.0, 6.0],
                                       "sag": [0.25, 0.5, 0.75, 1.0, 1.5],
                                       "flux-distilled": [1.0, 2.0, 3.5, 5.0, 7.0],
                                       "universal-clip": [1.0, 5.0, 10.0, 20.0, 50.0]}
SCALE_RANGE = (0.0, 1000.0)

PRESETS: dict[str, dict[str, Any]] = {
    # finishes in about 2 minutes on a 2-core CPU for `--guidance cfg`, and still shows the trade-off
    "quick": {"prompts": "emoji200", "prompt_limit": 20, "samples_per_prompt": 1, "seeds": [0, 1, 2],
              "steps": 20, "sampler": "ddim", "batch_size": 72},
    # thousands of samples per cell: meant for a GPU
    "full": {"prompts": "emoji-all", "prompt_limit": None, "samples_per_prompt": 2, "seeds": [0, 1, 2, 3, 4],
             "steps": 50, "sampler": "ddim", "batch_size": 256},
    # the CI quality gate and end-to-end tests
    "tiny": {"prompts": "emoji200", "prompt_limit": 8, "samples_per_prompt": 1, "seeds": [0, 1],
             "steps": 4, "sampler": "ddim", "batch_size": 8},
}


ALL = "all"  # --guidance all: every registered method that applies to the model and sampler

HALF_NUMERICS = 2  # bump when a change alters bf16/fp16 samples but not fp32 ones (part of their sample key)


@dataclass
class BenchConfig:
    guidance: list[str] = field(default_factory=lambda: ["cfg"])
    scales: dict[str, list[float]] = field(default_factory=dict)  # empty: the preset's defaults
    prompts: str = "emoji200"
    prompt_limit: int | None = 20
    samples_per_prompt: int = 1
    negative_prompt: str | None = None  # CFG's unconditional branch for prompts without their own negative_prompt
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    sampler: str = "ddim"
    schedule: str = "default"  # sigma schedule: the model's own, or a spacing or Karras / exponential
    steps: int = 20
    eta: float | None = None  # the sampler's noise option (None: its default; DDIM 0, Euler ancestral 1)
    batch_size: int = 72
    device: str = "cpu"
    dtype: str = "float32"
    channels_last: bool | None = None  # None: on for CUDA, off for CPU
    compile: bool = False  # torch.compile the networks
    cuda_graphs: bool = False  # torch.compile in "reduce-overhead" mode (CUDA graphs)
    cudnn_benchmark: bool | None = None  # None: on for CUDA (cuDNN times its convolution algorithms)
    autotune: bool = False  # with compile / cuda_graphs: inductor max-autotune
    half_weights: bool = True  # under bf16/fp16 autocast, conv/linear weights stored in it (same samples)
    model: str = "emoji"  # the embedded zoo, a directory of zoo-format checkpoints, or diffusers:PATH
    clip_model: str | None = None  # open_clip architecture for CLIP score (default: the zoo's eval CLIP)
    clip_pretrained: str | None = None  # local pretrained file for clip_model
    score_with_guiding_clip: bool = False  # only to demonstrate GLIDE's warning; labelled in reports
    fid_inception_weights: str | None = None  # local Inception weights (adds the inception network)
    metrics: list[str] = field(default_factory=lambda: list(METRIC_NAMES))
    features: list[str] = field(default_factory=lambda: ["domain"])  # feature networks for FID, KID, PR/DC
    dinov2_weights: str | None = None  # local DINOv2 weights for the dinov2 network
    dinov2_arch: str = DINOV2_ARCH  # its timm architecture
    reference: str | None = None  # real images: a folder, COCO captions json, or features file (None: the zoo's)
    reference_images: str | None = None  # the image folder of a COCO captions json --reference
    bootstrap: int = 200  # resamples of each cell's images for set-metric intervals (0: none)
    out: str = "reports"
    run_id: str | None = None
    preset: str = "quick"
    model_fingerprint: str | None = None  # hash of the sampling and guiding weights, set when a run loads them

    # fields that change the samples besides each sample's prompt and label (those are checked per sample, so
    # --prompt-limit and the prompt file may change without resampling what still holds): the resume key
    # (new weights under the same --model never reuse samples)
    SAMPLE_FIELDS = ("sampler", "schedule", "steps", "eta", "dtype", "model", "model_fingerprint")

    @classmethod
    def from_preset(cls, preset: str = "quick", **overrides: Any) -> "BenchConfig":
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
        values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)}; valid: {sorted(known)}")
        return cls(preset=preset, **values)

    def scale_grid(self) -> dict[str, list[float]]:
        defaults = FULL_SCALES if self.preset == "full" else QUICK_SCALES
        return {g: [float(s) for s in self.scales.get(g, defaults.get(g, [1.0]))] for g in self.guidance}

    def acceleration(self) -> Acceleration:
        return Acceleration(self.channels_last, self.compile, self.cuda_graphs, self.cudnn_benchmark, self.autotune,
                            self.half_weights)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scales"] = self.scale_grid()
        return data

    def cell_hash(self, guidance: str, scale: float, seed: int) -> str:
        """Key of one cell's samples: what the images depend on (not the batch size or device count)."""
        key = self.sample_settings()
        if key["schedule"] == "default":
            key.pop("schedule")  # keys made before schedules existed stay valid
        key.update(guidance=guidance, scale=scale, seed=seed)
        numerics = REGISTRY[guidance][0].numerics_version
        if numerics != 1:
            key["numerics"] = numerics  # the method's fp32 samples changed: never mixed with older ones
        if self.dtype != "float32":
            # 2026-11-26: guidance combines half-precision outputs in fp32; bf16/fp16 samples saved before
            # differ (and were NaN for APG and CFG-rescale under fp16), so a resume must not mix them in
            key["half_numerics"] = HALF_NUMERICS
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def sample_settings(self) -> dict[str, Any]:
        """The settings samples depend on besides their prompt, with the sampler's default eta filled in
        (a config that left --eta unset and one that gave the default ask for the same samples)."""
        values = {f: getattr(self, f) for f in self.SAMPLE_FIELDS}
        spec = SAMPLERS.get(self.sampler)
        if values["eta"] is None:
            values["eta"] = spec.default_eta if spec is not None else 0.0
        return values

    def config_hash(self) -> str:
        data = self.to_dict()
        for volatile in ("out", "run_id", "device", "batch_size", "channels_last", "compile", "cuda_graphs",
                         "cudnn_benchmark", "autotune", "half_weights"):
            data.pop(volatile)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def validate(self, num_timesteps: int = 1000) -> None:
        """Raise a one-line ValueError naming the bad option and the fix; nothing is sampled before this."""
        every = self.guidance == [ALL]  # resolved against the model once it is loaded
        unknown = [g for g in self.guidance if g not in REGISTRY and not every]
        if unknown or not self.guidance:
            raise ValueError(f"unknown guidance {unknown or self.guidance}; valid: {', '.join(REGISTRY)} "
                             f"(comma-separated, or 'all')")
        extra = set(self.scales) - set(self.guidance) - set(REGISTRY if every else ())
        if extra:
            raise ValueError(f"scales given for {sorted(extra)}, which is not in --guidance {self.guidance}")
        for g, scales in ({} if every else self.scale_grid()).items():
            if not scales:
                raise ValueError(f"no scales for {g!r}; give at least one, e.g. --scales {g}=1,3,6")
            repeated = sorted({s for s in scales if scales.count(s) > 1})
            if repeated:
                raise ValueError(f"scale(s) {repeated} for {g!r} given twice: a repeated scale repeats a row and "
                                 f"its samples; list each scale once")
            for s in scales:
                if not math.isfinite(s) or not SCALE_RANGE[0] <= s <= SCALE_RANGE[1]:
                    raise ValueError(f"scale {s} for {g!r} is out of range; use finite values in "
                                     f"[{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}]")
        if not 1 <= self.steps <= num_timesteps:
            raise ValueError(f"--steps {self.steps} is out of range; use 1..{num_timesteps}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; valid: {', '.join(SAMPLERS)} (--sampler list)")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)} (--sampler list)")
        if self.eta is not None:
            if "eta" not in SAMPLERS[self.sampler].options and self.eta != 0:
                raise ValueError(f"--eta {self.eta}: sampler {self.sampler!r} takes no eta; samplers with one: "
                                 f"{', '.join(n for n, s in SAMPLERS.items() if 'eta' in s.options)}")
            if not 0.0 <= self.eta <= 1.0:
                raise ValueError(f"--eta {self.eta} is out of range; use [0, 1]")
        if self.negative_prompt is not None and not self.negative_prompt.strip():
            raise ValueError("--negative-prompt is empty; leave the flag out to use the null caption")
        if self.samples_per_prompt < 1 or self.batch_size < 1:
            raise ValueError("--samples-per-prompt and --batch-size must be at least 1")
        if self.prompt_limit is not None and self.prompt_limit < 1:
            raise ValueError(f"--prompt-limit {self.prompt_limit} is out of range; use a positive count or 'all'")
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed (two or more for confidence intervals)")
        repeated = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        if repeated:
            raise ValueError(f"--seeds repeats {repeated}: a repeated seed set redraws the same samples and "
                             f"shrinks the confidence intervals falsely; give distinct seeds")
        device = checked_device(self.device)
        if self.cuda_graphs or self.autotune:
            self.acceleration().check(device)  # the flag rules live in Acceleration.check
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"unknown dtype {self.dtype!r}; valid: float32, bfloat16, float16")
        self.validate_evaluators()
        if self.clip_pretrained and not self.clip_model:
            raise ValueError(f"--clip-pretrained {self.clip_pretrained} needs --clip-model NAME (its open_clip "
                             f"architecture, e.g. ViT-B-32)")
        if self.score_with_guiding_clip and self.clip_model:
            raise ValueError("--score-with-guiding-clip scores with the guiding CLIP, so --clip-model and "
                             "--clip-pretrained would go unused; give one or the other")
        if self.run_id is not None and (not self.run_id.strip() or Path(self.run_id).name != self.run_id
                                        or self.run_id in (".", "..")):
            raise ValueError(f"--run-id {self.run_id!r} is not a plain directory name (it names a path); "
                             f"use a name without '/', e.g. {Path(self.run_id).name or 'my-run'!r}")
        if self.clip_model and not self.clip_pretrained:
            raise ValueError(f"--clip-model {self.clip_model} needs --clip-pretrained PATH (a local file; "
                             f"nothing is downloaded)")

    def feature_nets(self) -> list[str]:
        """The networks set metrics run on: --features, plus inception when its weights are given."""
        nets = list(self.features)
        if self.fid_inception_weights and "inception" not in nets:
            nets.append("inception")
        return nets

    def validate_evaluators(self) -> None:
        """The evaluator options: known names, and local files that exist and can be read."""
        bad = [m for m in self.metrics if m not in METRIC_NAMES]
        if bad:
            raise ValueError(f"unknown metric(s) {bad}; valid: {', '.join(METRIC_NAMES)}")
        bad = [f for f in self.features if f not in FEATURE_NETS]
        if bad or not self.features:
            raise ValueError(f"unknown feature network(s) {bad or self.features} in --features; valid: "
                             f"{', '.join(FEATURE_NETS)} (comma-separated)")
        if self.bootstrap < 0:
            raise ValueError(f"--bootstrap {self.bootstrap} is out of range; use 0 (no intervals) or a count, e.g. 200")
        if "inception" in self.features and not self.fid_inception_weights:
            raise ValueError("--features inception needs --fid-inception-weights LOCAL_FILE (torch-fidelity's "
                             f"pt_inception-2015-12-05); {NOTHING_DOWNLOADED}")
        if "dinov2" in self.features:
            check_readable(self.dinov2_weights, "--dinov2-weights", "give DINOv2 weights (.safetensors or .pth) "
                           f"for --dinov2-arch {self.dinov2_arch}")
        for flag, path in (("--fid-inception-weights", self.fid_inception_weights),
                           ("--clip-pretrained", self.clip_pretrained)):
            if path is not None:
                check_readable(path, flag, "pass a local weights file")
        if self.clip_model and self.clip_model.startswith(("hf-hub:", "hf_hub:")):
            raise ValueError(f"--clip-model {self.clip_model}: an hf-hub name would download; {NOTHING_DOWNLOADED} "
                             f"with --clip-pretrained and name its architecture (e.g. ViT-B-32)")

    def with_overrides(self, **kwargs: Any) -> "BenchConfig":
        return replace(self, **kwargs)

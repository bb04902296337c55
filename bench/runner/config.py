"""Benchmark configuration: presets and validation before any sampling starts (each method's default scale
grids are declared on its class, guidance.guiders)."""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import re
from dataclasses import asdict, dataclass, fields, replace
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from bench.evaluators import DINOV2_ARCH, FEATURE_NETS, default_metrics, metric_names
from bench.runner.flags import comma_list, flag_of, option, parse_prompt_limit, parse_repaint, parse_scales, parse_seeds
from bench.evaluators.base import NOTHING_DOWNLOADED, check_readable
from bench.evaluators.config import ScoringConfig
from bench.evaluators.preference import refuse_real_only
from bench.evaluators.registry import selected
from guidance.accelerate import Acceleration, checked_device
from guidance.evaluation import domain_evaluators
from guidance.guiders import REGISTRY, guidance_class
from guidance.guiders.cfg_rescale import RESCALE_SPACES
from guidance.process import SCHEDULES
from guidance.rng import NOISE_MODES
from guidance.samplers import SAMPLERS
from guidance.sources import DIFFUSERS_PREFIX
from guidance.models import source_of  # the sources register themselves on importing guidance.models

SCALE_RANGE = (0.0, 1000.0)
SEED_LIMIT = 2**63  # seeds are drawn in [0, 2^63): larger ones wrap in the generator and repeat a seed set
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,127}")  # a directory name on every file system, shell-safe

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


DEFAULT_TASK = "text-to-image"
TASK_ALIASES = {"generate": DEFAULT_TASK}  # --task generate: text-to-image's earlier name


def task_name(text: str) -> str:
    return TASK_ALIASES.get(text, text)

ALL = "all"  # --guidance all: every registered method that applies to the model and sampler

HALF_NUMERICS = 2  # bump when a change alters bf16/fp16 samples but not fp32 ones (part of their sample key)
# bump when a pipeline folder's trajectory changes (part of diffusers: models' sample keys; 2: it ends where the
# scheduler's last step lands and --sampler follows that sampler's diffusers scheduler)
PIPELINE_TRAJECTORY = 2


@dataclass
class BenchConfig:
    guidance: list[str] = option(factory=lambda: ["cfg"], parse=comma_list,
                                 help="comma-separated methods, 'all', or 'list' to print them")
    scales: dict[str, list[float]] = option(factory=dict, parse=parse_scales,  # empty: each method's own grid
                                            help="'1,3,6' for all methods or 'cfg=1,3,6;clip=1,5,10' (default: "
                                                 "each method's own grid for the preset)")
    prompts: str = option("emoji200", tasks=("text-to-image", "cascade"), help="built-in set name (emoji200, emoji-all) or a prompt file (.txt, .csv, "
                                           ".tsv, .jsonl, COCO .json)")
    prompt_limit: int | None = option(20, type=parse_prompt_limit, help="use the first N prompts, or 'all'")
    samples_per_prompt: int = option(1, type=int, help="samples drawn per prompt and seed set")
    negative_prompt: str | None = option(None, help="negative prompt for CFG and its variants (replaces the null "
                                                    "caption; a prompt file's negative_prompt column overrides it)")
    seeds: list[int] = option(factory=lambda: [0, 1, 2], parse=parse_seeds,
                              help="seed sets, e.g. 0,1,2 (>= 2 for confidence intervals)")
    sampler: str = option("ddim", help="ddim, ddpm, euler, euler-ancestral, heun, dpmpp-2m, flow-euler, or 'list' "
                                       "to describe them; a diffusers pipeline defaults to its own scheduler's")
    schedule: str = option("default", help="sigma schedule: default (the model's own), respace, leading, trailing, "
                                           "linspace, karras, exponential")
    steps: int = option(20, type=int, help="sampler steps (Heun evaluates the model twice per step)")
    eta: float | None = option(None, type=float, help="the sampler's noise: ddim (default 0), euler-ancestral "
                                                      "(default 1)")
    noise: str = option("device", choices=tuple(NOISE_MODES),
                        help="where each sample's generator lives: device, or diffusers (CPU generators: sample i "
                             "regenerates in a diffusers pipeline from per_sample.csv's noise_seed)")
    save_latents: bool = option(False, switch="on", help="also write each sample's final latents (before decoding) "
                                                         "as samples/<cell>.latents/<i>.safetensors")
    rescale_space: str = option("x0", choices=tuple(RESCALE_SPACES),
                                help="where cfg-rescale rescales: x0, or model (diffusers' guidance_rescale)")
    batch_size: int = option(72, type=int, help="images per sampling batch")
    device: str = option("cpu", help="cpu or cuda[:N]")
    dtype: str = option("float32", help="float32, bfloat16 or float16 (autocast)")
    # the speed-ups: their flags are guidance.accelerate.add_arguments' (shared with bench.tools.perf and bench.tools.limit)
    channels_last: bool | None = None  # None: on for CUDA, off for CPU
    compile: bool = False  # torch.compile the networks
    cuda_graphs: bool = False  # torch.compile in "reduce-overhead" mode (CUDA graphs)
    cudnn_benchmark: bool | None = None  # None: on for CUDA (cuDNN times its convolution algorithms)
    autotune: bool = False  # with compile / cuda_graphs: inductor max-autotune
    half_weights: bool = True  # under bf16/fp16 autocast, conv/linear weights stored in it (same samples)
    model: str = option("emoji", help="'emoji' (embedded zoo), a directory of zoo checkpoints, or diffusers:PATH "
                                      "(a diffusers pipeline folder, docs/diffusers.md)")
    clip_model: str | None = option(None, help="open_clip architecture for CLIP score (default: the zoo's eval CLIP)")
    clip_pretrained: str | None = option(None, help="local pretrained file for --clip-model")
    score_with_guiding_clip: bool = option(False, switch="on", help="score with the guiding CLIP (inflated: only "
                                                                    "to show GLIDE's warning; labelled in reports)")
    fid_inception_weights: str | None = option(None, help="local Inception weights for FID (adds the inception "
                                                          "network)")
    metrics: list[str] = option(factory=lambda: list(default_metrics()), parse=comma_list,
                                help=f"comma-separated subset of {','.join(metric_names())}")
    features: list[str] = option(factory=lambda: ["domain"], parse=comma_list,
                                 help="feature networks for FID/KID/precision-recall: domain, inception, dinov2, "
                                      "clip (comma-separated)")
    dinov2_weights: str | None = option(None, help="local DINOv2 weights (.safetensors or .pth) for --features dinov2")
    dinov2_arch: str = option(DINOV2_ARCH, help="timm DINOv2 architecture")
    hps_weights: str | None = option(None, help="local HPSv2 or HPSv2.1 weights (HPS_v2*_compressed.pt or "
                                                ".safetensors) for --metrics hpsv2")
    pickscore_model: str | None = option(None, help="local PickScore_v1 folder (transformers CLIPModel) for "
                                                    "--metrics pickscore")
    pickscore_processor: str | None = option(None, help="local folder of PickScore's CLIPProcessor "
                                                        "(laion/CLIP-ViT-H-14-laion2B-s32B-b79K's; default: "
                                                        "--pickscore-model's folder)")
    image_reward_model: str | None = option(None, help="local folder with ImageReward.pt (or .safetensors) and "
                                                       "bert-base-uncased's vocab.txt for --metrics image_reward")
    aesthetic_weights: str | None = option(None, help="local LAION aesthetic predictor v2 MLP "
                                                      "(sac+logos+ava1-l14-linearMSE.pth or .safetensors) for "
                                                      "--metrics aesthetic")
    aesthetic_clip: str | None = option(None, help="local CLIP ViT-L/14 folder (transformers, "
                                                   "openai/clip-vit-large-patch14) for --metrics aesthetic")
    reference: str | None = option(None, help="real images: a folder, a COCO captions json, or a features "
                                              ".safetensors (default: the zoo's emoji dataset)")
    reference_images: str | None = option(None, help="image folder of a COCO captions json --reference")
    bootstrap: int = option(200, type=int, help="resamples per cell for set-metric intervals (0: none)")
    calibrate: bool = option(False, switch="on",
                             help="also run plain CFG at each method's measured effective scale and NFE, on the same "
                                  "prompts and noise, and write the paired comparison (win rates) to calibrated.csv "
                                  "(GA-Eval, docs/statistics.md)")
    out: str = option("reports", help="parent directory of run directories")
    run_id: str | None = option(None, help="name of the run directory (rerun with the same id to resume)")
    preset: str = option("quick", choices=tuple(PRESETS), help="quick (~2 min on 2 CPU cores), full (GPU) or tiny "
                                                               "(CI)")
    model_fingerprint: str | None = None  # hash of the sampling and guiding weights, set when a run loads them
    task: str = option(DEFAULT_TASK, parse=task_name,
                       help="what a cell samples (bench.tasks): text-to-image, inpaint (the editing benchmark) or "
                            "cascade (base -> diffusion upsampler 32 -> 64 px, scored at 64 px)")
    masks: list[str] = option(factory=lambda: ["center", "strokes"], parse=comma_list, tasks=("inpaint",),
                              help="mask kinds, subset of center,half,box,strokes (guidance.masks)")
    mask_file: str | None = option(None, tasks=("inpaint",),
                                   help="one black-and-white mask image for every source (white = regenerate)")
    inpaint_methods: list[str] = option(factory=lambda: ["model", "replace"], parse=comma_list, tasks=("inpaint",),
                                        help="subset of model,replace,repaint (guidance.inpaint.METHODS)")
    repaint: list[int] = option(factory=lambda: [5, 2], parse=parse_repaint, tasks=("inpaint",),
                                help="RePaint's jump length and resample count, J,R")
    edit_captions: list[str] = option(factory=lambda: ["source", "edit"], parse=comma_list, tasks=("inpaint",),
                                      help="caption kinds, subset of source,edit")
    inpaint_model: str | None = option(None, tasks=("inpaint",), help="GLIDE-style inpainting model file (default: "
                                                                      "inpaint_unet.safetensors beside --model's weights)")
    upsampler: str | None = option(None, tasks=("cascade",),
                                   help="upsampler file (default: upsampler.safetensors beside --model's weights)")
    cascade_features: str | None = option(None, tasks=("cascade",), help="64 px feature classifier file (default: "
                                                                          "eval_classifier_64 beside --model's weights)")
    upsampler_scale: float = option(1.0, type=float, tasks=("cascade",),
                                    help="CFG on the upsampler (1: unguided, one pass per step)")
    upsample_aug: int = option(50, type=int, tasks=("cascade",),
                               help="noise-augmentation timestep of the 32 px input")
    upsample_steps: int = option(25, type=int, tasks=("cascade",), help="the upsampler's DDIM steps")
    upsample_start: int = option(500, type=int, tasks=("cascade",),
                                 help="start the upsampler at this timestep from the noised bicubic image (999: "
                                      "from pure noise; 500: the best of bench.zoo.upsample_real's sweep, "
                                      "docs/inpainting.md); it takes the --upsample-steps trajectory's steps below it")

    # fields that change the samples besides each sample's prompt and label (those are checked per sample, so
    # --prompt-limit and the prompt file may change without resampling what still holds): the resume key
    # (new weights under the same --model never reuse samples)
    SAMPLE_FIELDS = ("sampler", "schedule", "steps", "eta", "noise", "dtype", "model", "model_fingerprint")

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
        """Each method's scales: those given, else the grid its class declares for the preset (an unknown
        method is a one-line error, never a made-up grid)."""
        return {g: [float(s) for s in (self.scales[g] if g in self.scales else
                                       guidance_class(g).default_scales(self.preset))] for g in self.guidance}

    def acceleration(self) -> Acceleration:
        return Acceleration(self.channels_last, self.compile, self.cuda_graphs, self.cudnn_benchmark, self.autotune,
                            self.half_weights)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scales"] = self.scale_grid()
        return data

    def cell_hash(self, guidance: str, scale: float, seed: int, task_key: dict | None = None) -> str:
        """Key of one cell's samples: what the images depend on (not the batch size or device count);
        `task_key` holds what a task other than text-to-image adds (its variant, its models' weights)."""
        key = self.sample_settings() | (task_key or {})
        if key["schedule"] == "default":
            key.pop("schedule")  # keys made before schedules existed stay valid
        if key["noise"] == "device":
            key.pop("noise")  # likewise before noise modes: the zoo's default samples keep their keys
        options = self.guidance_options(guidance)
        if options.get("rescale_space", "x0") != "x0":
            key["rescale_space"] = options["rescale_space"]
        if self.model.startswith(DIFFUSERS_PREFIX):
            key["pipeline_trajectory"] = PIPELINE_TRAJECTORY
        key.update(guidance=guidance, scale=scale, seed=seed)
        numerics = guidance_class(guidance).numerics_version
        if numerics != 1:
            key["numerics"] = numerics  # the method's fp32 samples changed: never mixed with older ones
        if self.dtype != "float32":
            # 2026-11-26: guidance combines half-precision outputs in fp32; bf16/fp16 samples saved before
            # differ (and were NaN for APG and CFG-rescale under fp16), so a resume must not mix them in
            key["half_numerics"] = HALF_NUMERICS
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def guidance_options(self, guidance: str) -> dict[str, Any]:
        """The run's options a guidance method takes (cfg-rescale's rescale_space), for make_guidance."""
        cls = REGISTRY[guidance][0] if guidance in REGISTRY else None
        takes = cls is not None and "rescale_space" in inspect.signature(cls.__init__).parameters
        return {"rescale_space": self.rescale_space} if takes else {}

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
        for name, tasks in task_fields().items():  # only the run's own task's options identify it
            if self.task not in tasks:
                data.pop(name)
        if self.task == DEFAULT_TASK:
            data.pop("task")
        if not self.calibrate:
            data.pop("calibrate")  # the run's own samples and figures do not depend on it: hashes made before stay
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
            raise ValueError(f"--scales given for {sorted(extra)}, which is not in --guidance {self.guidance}")
        for g, scales in ({} if every else self.scale_grid()).items():
            if not scales:
                raise ValueError(f"no scales for {g!r}; give at least one, e.g. --scales {g}=1,3,6")
            repeated = sorted({s for s in scales if scales.count(s) > 1})
            if repeated:
                raise ValueError(f"--scales: scale(s) {repeated} for {g!r} given twice: a repeated scale repeats a row and "
                                 f"its samples; list each scale once")
            for s in scales:
                if not math.isfinite(s) or not SCALE_RANGE[0] <= s <= SCALE_RANGE[1]:
                    raise ValueError(f"--scales: scale {s} for {g!r} is out of range; use finite values in "
                                     f"[{SCALE_RANGE[0]:g}, {SCALE_RANGE[1]:g}]")
        if not 1 <= self.steps <= num_timesteps:
            raise ValueError(f"--steps {self.steps} is out of range; use 1..{num_timesteps}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; valid: {', '.join(SAMPLERS)} (--sampler list)")
        if self.noise not in NOISE_MODES:
            raise ValueError(f"unknown --noise {self.noise!r}; valid: {', '.join(NOISE_MODES)}")
        if self.rescale_space not in RESCALE_SPACES:
            raise ValueError(f"unknown --rescale-space {self.rescale_space!r}; valid: {', '.join(RESCALE_SPACES)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)} (--sampler list)")
        if self.eta is not None:
            if "eta" not in SAMPLERS[self.sampler].options and self.eta != 0:
                raise ValueError(f"--eta {self.eta}: sampler {self.sampler!r} takes no eta; samplers with one: "
                                 f"{', '.join(n for n, s in SAMPLERS.items() if 'eta' in s.options)}")
            if not 0.0 <= self.eta <= 1.0:
                raise ValueError(f"--eta {self.eta} is out of range; use [0, 1]")
        if self.negative_prompt is not None:
            check_text(self.negative_prompt, "--negative-prompt")
        if self.samples_per_prompt < 1 or self.batch_size < 1:
            raise ValueError("--samples-per-prompt and --batch-size must be at least 1")
        if self.prompt_limit is not None and self.prompt_limit < 1:
            raise ValueError(f"--prompt-limit {self.prompt_limit} is out of range; use a positive count or 'all'")
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed (two or more for confidence intervals)")
        outside = [s for s in self.seeds if not 0 <= s < SEED_LIMIT]
        if outside:
            raise ValueError(f"--seeds {outside[0]} is out of range; seeds are whole numbers in [0, 2^63)")
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
        if self.run_id is not None and not RUN_ID.fullmatch(self.run_id):
            raise ValueError(f"--run-id {self.run_id!r} is not a plain directory name; use up to 128 letters, digits "
                             f"and . _ + = - (not starting with . or -), e.g. my-run-1")
        if self.clip_model and not self.clip_pretrained:
            raise ValueError(f"--clip-model {self.clip_model} needs --clip-pretrained PATH (a local file; "
                             f"nothing is downloaded)")

    def scoring(self) -> ScoringConfig:
        """What scoring reads of the run's settings (bench.runner.scoring gets this slice, not the whole config)."""
        return ScoringConfig.of(self)

    def validate_evaluators(self) -> None:
        """The evaluator options: known names, and local files that exist and can be read."""
        bad = [m for m in self.metrics if m not in metric_names()]
        if bad:
            raise ValueError(f"unknown metric(s) {bad}; valid: {', '.join(metric_names())}")
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
        if source_of(self.model)[0].domain == domain_evaluators().domain:  # the zoo evaluators' own domain
            refuse_real_only(self.metrics)
        for metric in selected(self.metrics):  # the preference evaluators' local files (bench.evaluators.preference)
            if hasattr(metric, "check_files"):
                metric.check_files(self.scoring())
        for flag, path in (("--fid-inception-weights", self.fid_inception_weights),
                           ("--clip-pretrained", self.clip_pretrained)):
            if path is not None:
                check_readable(path, flag, "pass a local weights file")
        if self.clip_model and self.clip_model.startswith(("hf-hub:", "hf_hub:")):
            raise ValueError(f"--clip-model {self.clip_model}: an hf-hub name would download; {NOTHING_DOWNLOADED} "
                             f"with --clip-pretrained and name its architecture (e.g. ViT-B-32)")

    def with_overrides(self, **kwargs: Any) -> "BenchConfig":
        return replace(self, **kwargs)


def task_fields() -> dict[str, tuple[str, ...]]:
    """Each task-specific field and the tasks it applies to (from its flag's declaration)."""
    return {f.name: flag.tasks for f in fields(BenchConfig) if (flag := flag_of(f)) is not None and flag.tasks}


def check_text(text: str, flag: str) -> None:
    """Text from the command line, held to a prompt file's rules: valid UTF-8 (Python keeps invalid bytes of
    argv as lone surrogates), no NUL byte, not empty."""
    if not text.strip():
        raise ValueError(f"{flag} is empty; leave the flag out to use the null caption")
    bad = next((i for i, c in enumerate(text) if "\ud800" <= c <= "\udfff"), None)
    if bad is not None:
        raise ValueError(f"{flag} is not valid UTF-8 (byte {ord(text[bad]) & 0xFF:#04x} at character {bad}); "
                         f"pass UTF-8 text")
    if "\0" in text:
        raise ValueError(f"{flag} holds a NUL byte at character {text.index(chr(0))}; remove it")


def fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's type hint (int, float, str, bool, None, list[...], dict[str, ...])."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, UnionType):
        return any(fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(fits(k, args[0]) and fits(v, args[1]) for k, v in value.items())
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def misfit_fields(data: dict[str, Any]) -> list[str]:
    """The fields of saved settings (a run's config.json) whose values do not fit BenchConfig's types."""
    hints = get_type_hints(BenchConfig)
    return [name for name, value in data.items() if name in hints and not fits(value, hints[name])]

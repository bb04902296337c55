"""Which methods and metrics can run here: the one applicability check every task and `--guidance all` use
(each method's own `why_not` over what the model, sampler and prompts offer), the label-range checks, and the
metrics that apply to the model's domain and the task (each metric's declared needs)."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from bench.evaluators import METRICS
from bench.evaluators.preference import refuse_real_only
from bench.prompts.readers import PromptSet
from bench.runner.config import ALL, BenchConfig
from bench.runner.preflight import check_sample_count
from guidance.bundle import ModelBundle
from guidance.evaluation import domain_evaluators
from guidance.guiders import REGISTRY, MethodContext, guidance_class
from guidance.protocols import Perturbable
from guidance.samplers import renoising_samplers, sampler_spec


def method_context(cfg: BenchConfig, bundle: ModelBundle, labels: bool, prompt_set: str) -> MethodContext:
    """What this model and sampler, and prompts with or without `labels`, offer a method
    (`Guidance.why_not` reads it)."""
    return MethodContext(source=bundle.source,
                         guiding_models=frozenset(k for k, m in bundle.guiding_models().items() if m is not None),
                         labels=labels, prompt_set=prompt_set,
                         pixel_space=bundle.clip_denoised, internals=isinstance(bundle.denoiser, Perturbable),
                         embedded_guidance=bundle.embedded_guidance, text_attention=bundle.text_attention,
                         sampler=cfg.sampler, sampler_renoises=sampler_spec(cfg.sampler).renoise,
                         renoising_samplers=renoising_samplers())


def why_not(name: str, cfg: BenchConfig, prompts: PromptSet, bundle: ModelBundle) -> str | None:
    """Why guidance `name` cannot run on this model, sampler and prompt set (one line with the fix), or None."""
    return guidance_class(name).why_not(method_context(cfg, bundle, prompts.has_labels, prompts.name))


def check_methods(names: list[str], context: MethodContext) -> None:
    """Refuse, before sampling, the first named method that cannot run in `context` (every task asks this)."""
    for name in names:
        reason = guidance_class(name).why_not(context)
        if reason is not None:
            raise ValueError(reason)


def applicable_guidance(cfg: BenchConfig, prompts: PromptSet, bundle: ModelBundle,
                        note: Callable[[str], None] = print) -> BenchConfig:
    """`--guidance all` becomes every registered method that can run here (`note` says which are
    skipped and why); scales given for 'all' apply to each. Other configs are returned as they are."""
    if cfg.guidance != [ALL]:
        return cfg
    names = []
    context = method_context(cfg, bundle, prompts.has_labels, prompts.name)
    for name, (cls, _) in REGISTRY.items():
        reason = cls.why_not(context)
        if reason is None:
            names.append(name)
        else:
            note(f"note: --guidance all skips {name!r}: {reason.split(';')[0]}")
    common = cfg.scales.get(ALL)
    scales = {g: v for g, v in cfg.scales.items() if g in names}
    if common is not None:
        scales = {g: list(common) for g in names} | scales
    resolved = replace(cfg, guidance=names, scales=scales)
    resolved.validate()
    return resolved


def check_compatible(cfg: BenchConfig, prompts: PromptSet, bundle: ModelBundle) -> None:
    check_methods(cfg.guidance, method_context(cfg, bundle, prompts.has_labels, prompts.name))
    for (what, drop), classes in label_limits(cfg, bundle, prompts).items():
        bad = next((p for p in prompts.prompts if p.label is not None and not 0 <= p.label < classes), None)
        if bad is not None:
            raise ValueError(f"prompt set {prompts.name!r}: label {bad.label} of {bad.text!r} is out of range "
                             f"0..{classes - 1} ({what}); fix the label column, or {drop}")
    check_sample_count(cfg, len(prompts))


def label_limits(cfg: BenchConfig, bundle: ModelBundle, prompts: PromptSet) -> dict[tuple[str, str], int]:
    """How many labels each user of the prompts' labels knows, keyed by (who, how to do without it): the
    guiding classifier's classes, and the identities alignment accuracy scores against (the zoo's label
    table; accuracy runs only when every prompt has a label)."""
    limits = {}
    classes = bundle.guiding_classes()
    guided = [g for g in cfg.guidance if guidance_class(g).guide_role() == "classifier"]
    if guided and classes is not None:
        limits["the guiding classifier's classes", f"drop {', '.join(guided)} from --guidance"] = classes
    if "accuracy" in cfg.metrics and prompts.has_labels:
        limits["the identities accuracy scores against", "drop accuracy from --metrics"] = \
            len(domain_evaluators().labels()["identity_subgroup"])
    return limits


def applicable_metrics(cfg: BenchConfig, domain: str, note: Callable[[str], None] = print,
                       task: str = "text-to-image") -> BenchConfig:
    """The run's metrics for a model of `domain` (the bundle's), from what each metric needs. A metric of
    another task (needs "task:inpaint") is refused. The zoo's evaluators know emoji only: on another model,
    metrics that need the zoo's domain (accuracy: the emoji label table) are dropped, metrics that need a
    reference or features need --reference (real images of the model's domain) and a feature network for
    them, and CLIP-based ones with the zoo's emoji CLIP are kept for a first look but named as such. `note`
    says what was dropped and how to get it back."""
    other_task = [m for m in cfg.metrics
                  if any(n.startswith("task:") and n != f"task:{task}" for n in METRICS[m].needs)]
    if other_task:
        tasks = sorted({n[len("task:"):] for m in other_task for n in METRICS[m].needs if n.startswith("task:")})
        raise ValueError(f"--metrics {','.join(other_task)}: they score {' / '.join(tasks)} results, not a {task} "
                         f"run; leave them out")
    if domain == domain_evaluators().domain:
        refuse_real_only(cfg.metrics)
        return cfg
    metrics = list(cfg.metrics)
    zoo_only = [m for m in metrics if "domain:zoo" in METRICS[m].needs]
    if zoo_only:
        metrics = [m for m in metrics if m not in zoo_only]
        note(f"note: {', '.join(zoo_only)} skipped: scored by the zoo's emoji evaluators (the emoji label table), "
             f"which know nothing of this model's images")
    if cfg.reference is None:
        dropped = [m for m in metrics if METRICS[m].needs & {"reference", "features"}]
        metrics = [m for m in metrics if m not in dropped]
        if dropped:
            note(f"note: {', '.join(dropped)} skipped: they compare with real images of the model's domain; pass "
                 f"--reference DIR (or a COCO captions json with --reference-images) and --features inception|dinov2|clip")
    elif "domain" in cfg.features:
        raise ValueError("--features domain is the emoji evaluation classifier, which knows nothing of this model's "
                         "images; pass --features inception, dinov2 or clip (with their local weights)")
    on_clip = [m for m in metrics if "clip" in METRICS[m].needs]
    if on_clip and not cfg.clip_model and not cfg.score_with_guiding_clip:
        note(f"note: {', '.join(on_clip)} use{'s' if len(on_clip) == 1 else ''} the zoo's emoji CLIP; pass "
             f"--clip-model ARCH --clip-pretrained FILE for your domain")
    if not metrics:
        raise ValueError("no metric applies to this model with these flags; pass --metrics clip_score, or --reference "
                         "DIR with --features inception|dinov2|clip for FID/KID/CMMD")
    return replace(cfg, metrics=metrics)

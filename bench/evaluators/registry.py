"""The one place a metric's and a feature network's facts live.

A metric is a class that declares its `--metrics` name, its kind (scored per image, or once over a cell's
image set), its result columns (direction, bounds, units, display label) and what it needs; it registers
itself with `@register_metric`. Scoring, the report, the verdict, the terminal summary, the regress gate
and the model cards read these declarations, so adding a metric is one module under bench/evaluators/
(imported by bench/evaluators/__init__.py) plus its test. Feature networks register with
`@register_feature_net` and build themselves from the scoring's shared resources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal, Protocol

import torch
from torch import Tensor

from bench.evaluators.config import ScoringConfig

Kind = Literal["per_image", "set"]
# domain:zoo: scored by the zoo's emoji evaluators; domain:real: trained on real images (refused on the zoo)
NEEDS = frozenset({"reference", "clip", "labels", "features", "task:inpaint", "task:cascade", "domain:zoo",
                   "domain:real"})
PRIMARY_NET = "domain"  # its columns keep the plain names; other networks' columns are suffixed


@dataclass(frozen=True)
class Column:
    """One result column of a metric: what a reader needs to read its number."""

    higher_is_better: bool
    label: str  # report heading ("FID", "CLIP score", "accuracy: identity")
    units: str
    bounds: tuple[float, float] | None = None  # the column's range, where it has one (intervals stay in it)
    percent: bool = False  # stored as a fraction, shown in percent (differences in percentage points)
    spread: bool = False  # a spread of another column (kid_std): written, never summarised or compared
    headline: bool = True  # shown in the terminal's summary table (the report shows every column)

    @property
    def direction(self) -> str:
        return "higher" if self.higher_is_better else "lower"


@dataclass
class ScoringBatch:
    """One batch of a cell as every metric sees it: uint8 images [N, 3, H, W] on the scoring device, each
    image's caption and label, and task extras ("source", "mask", "reference_image", "low_res")."""

    images: Tensor
    texts: list[str]
    labels: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def pixels(self) -> Tensor:
        """The images as float in [-1, 1] (computed once per batch)."""
        return self.memo("pixels", lambda: self.images.float().div(127.5).sub(1))

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """A value several metrics share (CLIP image embeddings), computed once per batch."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


class Resources(Protocol):
    """What scoring loads once and metrics and feature networks build themselves from (lazily)."""

    config: ScoringConfig
    device: torch.device

    @property
    def classifier(self) -> Any: ...

    @property
    def scorer(self) -> Any: ...

    @property
    def label_tables(self) -> tuple[Tensor, Tensor]: ...

    def scorer_weights_id(self) -> str: ...


class RegisteredMetric:
    """A metric's declaration (contract 1 of REDESIGN.md). Per-image metrics subclass
    bench.evaluators.per_image.PerImageMetric, set metrics bench.evaluators.base.SetMetric."""

    name: ClassVar[str]  # the --metrics entry
    kind: ClassVar[Kind]
    columns: ClassVar[dict[str, Column]]
    needs: ClassVar[frozenset[str]] = frozenset()
    default: ClassVar[bool] = True  # in the default --metrics of a text-to-image run
    about: ClassVar[str] = ""  # the report legend's sentence on how to read it (default: labels and units)

    @classmethod
    def legend(cls) -> str:
        return cls.about or "; ".join(f"{c.label}: {c.units}, {c.direction} is better" for c in cls.columns.values()
                                      if not c.spread)


METRICS: dict[str, type[RegisteredMetric]] = {}
FEATURE_NETS: dict[str, type] = {}


def register_metric(cls: type[RegisteredMetric]) -> type[RegisteredMetric]:
    """Class decorator: add a metric to the registry, checking its declaration."""
    name = getattr(cls, "name", None)
    if not name or name in METRICS:
        raise ValueError(f"metric class {cls.__name__}: name {name!r} is missing or already registered")
    if cls.kind not in ("per_image", "set"):
        raise ValueError(f"metric {name}: kind must be 'per_image' or 'set', not {cls.kind!r}")
    if not cls.columns or not all(isinstance(c, Column) for c in cls.columns.values()):
        raise ValueError(f"metric {name}: columns must map result columns to Column declarations")
    if not cls.needs <= NEEDS:
        raise ValueError(f"metric {name}: unknown needs {sorted(cls.needs - NEEDS)}; valid: {sorted(NEEDS)}")
    taken = {c for m in METRICS.values() for c in m.columns}
    if taken & set(cls.columns):
        raise ValueError(f"metric {name}: column(s) {sorted(taken & set(cls.columns))} already declared")
    METRICS[name] = cls
    return cls


def register_feature_net(cls: type) -> type:
    """Class decorator: add a feature network (it provides `build(resources)`) to the registry."""
    if cls.name in FEATURE_NETS:
        raise ValueError(f"feature network {cls.name!r} is already registered")
    FEATURE_NETS[cls.name] = cls
    return cls


def metric_names() -> tuple[str, ...]:
    """Every valid --metrics entry, in registration order."""
    return tuple(METRICS)


def default_metrics() -> tuple[str, ...]:
    """The --metrics default: every metric a text-to-image run can compute."""
    return tuple(n for n, m in METRICS.items() if m.default)


def selected(names: list[str] | tuple[str, ...], kind: Kind | None = None) -> list[type[RegisteredMetric]]:
    """The registered metrics among `names`, in registration order (so result columns keep their order)."""
    return [m for n, m in METRICS.items() if n in names and (kind is None or m.kind == kind)]


def column(name: str, net: str) -> str:
    """Result column of a metric column on a network: plain for the primary network, else suffixed."""
    return name if net == PRIMARY_NET else f"{name}_{net}"


def declared_columns(kind: Kind | None = None) -> dict[str, Column]:
    """Every declared result column (plain names) with its declaration."""
    return {c: spec for m in METRICS.values() if kind is None or m.kind == kind for c, spec in m.columns.items()}


def column_spec(name: str) -> Column | None:
    """The declaration of a result column; network-suffixed columns (fid_dinov2) take their metric's."""
    columns = declared_columns()
    if name in columns:
        return columns[name]
    for net in FEATURE_NETS:
        if name.endswith(f"_{net}") and name[: -len(net) - 1] in columns:
            return columns[name[: -len(net) - 1]]
    return None


def higher_is_better(name: str) -> bool:
    """Whether a larger value of a result column is better (an undeclared column, say a user's
    per-image score, counts as higher-is-better)."""
    spec = column_spec(name)
    return True if spec is None else spec.higher_is_better


def label(name: str) -> str:
    """A column's name for people (the column name when it declares none)."""
    spec = column_spec(name)
    if spec is None:
        return name
    return spec.label + (f" ({name.rsplit('_', 1)[1]})" if name not in declared_columns() else "")


def percent(name: str) -> bool:
    spec = column_spec(name)
    return spec is not None and spec.percent


def bounds(name: str) -> tuple[float, float]:
    spec = column_spec(name)
    return spec.bounds if spec is not None and spec.bounds is not None else (-math.inf, math.inf)


def per_image_columns() -> tuple[str, ...]:
    """Columns that are means of a per-image score (per_sample.csv holds the scores)."""
    return tuple(declared_columns("per_image"))


def set_columns() -> tuple[str, ...]:
    """Columns computed once per cell over its image set (not spreads such as kid_std)."""
    return tuple(c for c, s in declared_columns("set").items() if not s.spread)


def quality_columns() -> tuple[str, ...]:
    """Every column summarised with an interval (spreads excluded), in registration order."""
    return tuple(c for c, s in declared_columns().items() if not s.spread)


def directions() -> dict[str, str]:
    """Each declared column's direction ("higher" or "lower" is better), for evaluators.json."""
    return {c: s.direction for c, s in declared_columns().items()}

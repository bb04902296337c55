"""Reference sets: the real images a run's samples are compared with, and their features per network.

A reference is the zoo's emoji dataset (default), a folder of images (png/jpg/webp, any size), a COCO
captions json with its image folder, or a .safetensors file of features/statistics. Features computed from
images are cached under $GUIDANCE_BENCH_CACHE/references, keyed by the images' content hash and the
network's weights, so a second run reads them instead of recomputing.

The zoo's dataset is rendered from Debian's emoji fonts and Unicode data, which a pip install lacks, so
its features for the zoo's own networks are committed beside the weights (written by
`python -m bench.zoo.reference`); rendering is needed only for another network (e.g. --clip-model).
"""

from __future__ import annotations

import hashlib
import os
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import Tensor

from bench.evaluators.base import ChunkedSums, FeatureNet, file_digest, kth_neighbour_distance, resize_uint8
from bench.evaluators.mmd import offdiagonal_mean
from guidance.checkpoints import CheckpointError, cache_root
from guidance.evaluation import domain_evaluators

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CACHE_VERSION = 1  # bump when reference features are computed differently


@dataclass
class Reference:
    """Features of the real images (None for a statistics-only file) and FID's float64 sums."""

    features: Tensor | None
    sum: Tensor
    cov_sum: Tensor
    num_samples: int
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Reference":
        """A statistics/features file: `features` and/or `sum`, `cov_sum`, `num_samples` (None: the default
        evaluators' committed reference)."""
        path = path or domain_evaluators().reference_features
        if not Path(path).is_file():
            raise CheckpointError(f"reference statistics not found: {path}; pass --reference a features file written "
                                  f"by the bench or a folder of images")
        try:
            data = load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"--reference {path}: not a readable .safetensors file ({str(err)[:100]}); pass a "
                             f"features file written by the bench, or a folder of images") from None
        if "features" in data and "sum" not in data:
            return cls.of(data["features"].float())
        if "sum" not in data or "cov_sum" not in data:
            raise ValueError(f"--reference {path}: holds neither `features` nor `sum`/`cov_sum`; pass a features "
                             f"file written by the bench, or a folder of images")
        features = data["features"].float() if "features" in data else None
        return cls(features, data["sum"], data["cov_sum"], int(data["num_samples"]))

    @classmethod
    def of(cls, features: Tensor, chunk: int = 256) -> "Reference":
        sums = ChunkedSums.of(features, chunk)
        return cls(features, sums.sum, sums.cov_sum, sums.num_samples)

    def save(self, path: Path, feature_net: str, **metadata: str) -> None:
        """Written atomically; `feature_net` is the network's fingerprint, checked before the file is used."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")  # processes computing the same file
        tensors = {"sum": self.sum, "cov_sum": self.cov_sum, "num_samples": torch.tensor(self.num_samples)}
        if self.features is not None:
            tensors["features"] = self.features.contiguous()
        save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp), metadata={**metadata, "feature_net": feature_net})
        tmp.replace(path)

    def mean_cov(self) -> tuple[Tensor, Tensor]:
        return ChunkedSums(self.sum, self.cov_sum, self.num_samples).mean_cov()

    def cov_sqrt(self) -> Tensor:
        """S^1/2 of the reference covariance (eigenvalues clamped at 0), computed once."""
        if "sqrt" not in self._cache:
            values, vectors = torch.linalg.eigh(self.mean_cov()[1])
            self._cache["sqrt"] = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
        return self._cache["sqrt"]

    def radii(self, k: int) -> Tensor:
        """Distance of each reference point to its k-th nearest other reference point, computed once."""
        if ("radii", k) not in self._cache:
            self._cache["radii", k] = kth_neighbour_distance(self.needs_features("precision/recall"), k)
        return self._cache["radii", k]

    def kernel_mean(self, name: str, kernel: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """mean_{r != r'} kernel(r, r') over the reference, computed once per kernel name."""
        if ("kernel", name) not in self._cache:
            self._cache["kernel", name] = offdiagonal_mean(kernel, self.needs_features(name))
        return self._cache["kernel", name]

    def needs_features(self, metric: str) -> Tensor:
        if self.features is None:
            raise ValueError(f"{metric} needs the reference's features, and the --reference file holds statistics "
                             f"only; pass the reference images (a folder) or a features file")
        return self.features


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def coco_image_files(captions: Path, images: Path) -> list[Path]:
    """The images a COCO captions json names (each once, in file order), under its image folder: the json's
    shape checked, and every file_name confined to the folder (an absolute or ../ name is refused)."""
    flag = f"--reference {captions}"
    try:
        doc = json.loads(captions.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{flag}: not UTF-8 text ({err.reason}); pass a COCO captions json") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{flag}: invalid JSON at line {err.lineno} ({err.msg}); pass a COCO captions json") from None
    except RecursionError:
        raise ValueError(f"{flag}: JSON nested too deeply to read; pass a COCO captions json") from None
    entries = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{flag}: not a COCO captions json (it needs an object with an \"images\" list of "
                         f"{{\"id\", \"file_name\"}} objects); pass one, or a folder of images")
    bad = next((e.get("file_name") for e in entries if e.get("file_name") is not None
                and not isinstance(e.get("file_name"), str)), None)
    if bad is not None:
        raise ValueError(f"{flag}: file_name {bad!r} is not text; give each image's file name as a string")
    names = list(dict.fromkeys(e["file_name"] for e in entries if e.get("file_name")))
    if not names:
        raise ValueError(f"{flag}: its \"images\" list names no file_name; pass a COCO captions "
                         f"json with its images, or a folder of images")
    root = images.resolve()
    outside = next((n for n in names if "\0" in n or not (root / n).resolve().is_relative_to(root)), None)
    if outside is not None:
        raise ValueError(f"{flag}: file_name {outside!r} points outside --reference-images {images}; file names "
                         f"must be relative paths inside that folder")
    missing = [n for n in names if not (images / n).is_file()]
    if missing:
        raise ValueError(f"{flag}: {len(missing)} of its {len(names)} images are not in "
                         f"--reference-images {images} (e.g. {missing[0]}); point --reference-images at the folder "
                         f"that holds them (e.g. val2017/)")
    return [images / n for n in names]


def check_features_file(path: Path, minimum: int) -> None:
    """A features/statistics --reference read from its header (and its sample count): it must hold
    `features` of `minimum` rows or more, or `sum`, `cov_sum` and `num_samples`."""
    try:
        with safe_open(str(path), "pt") as f:
            keys = set(f.keys())
            rows = f.get_slice("features").get_shape()[0] if "features" in keys else None
            count = int(f.get_tensor("num_samples")) if "num_samples" in keys else rows
    except (SafetensorError, OSError, RuntimeError, ValueError, TypeError) as err:
        raise ValueError(f"--reference {path}: not a readable .safetensors file ({str(err)[:100]}); pass a features "
                         f"file written by the bench, or a folder of images") from None
    if "features" not in keys and not {"sum", "cov_sum", "num_samples"} <= keys:
        raise ValueError(f"--reference {path}: holds neither `features` nor `sum`/`cov_sum`/`num_samples` (it has "
                         f"{', '.join(sorted(keys)) or 'no tensors'}); pass a features file written by the bench, or "
                         f"a folder of images")
    if count is None or count < minimum:
        raise ValueError(f"--reference {path}: statistics of {count} image(s); FID's covariance and precision/recall "
                         f"need at least {minimum}; pass a larger reference")


@dataclass
class ReferenceSource:
    """Where the reference images come from, with a content hash that keys cached features."""

    label: str
    digest: Callable[[], str]  # content hash of the images (computed when features are first needed)
    batches: Callable[[FeatureNet], Iterator[Tensor]]  # uint8 [N, 3, H, W] batches for a network, fixed order
    files: dict[str, Path] = field(default_factory=dict)  # network name -> features file used as it is
    file: Path | None = None  # a features/statistics file for whichever network
    images: list[Path] = field(default_factory=list)  # the image files of a folder or COCO reference

    def check(self, nets: list[str]) -> None:
        """A features file must be of the networks the run uses (named in its metadata), checked unread."""
        if self.file is None:
            if any(n not in self.files for n in nets):
                try:
                    self.digest()  # reads (or for the zoo, renders) the images now, not after sampling
                except (OSError, RuntimeError) as err:
                    raise ValueError(f"reference images of {self.label} cannot be read ({str(err)[:160]}); fix that, "
                                     f"or pass --reference, or use --features domain without cmmd") from None
            return
        try:
            with safe_open(str(self.file), "pt") as f:
                made_by = (f.metadata() or {}).get("feature_net", "")
        except (SafetensorError, OSError) as err:
            raise ValueError(f"--reference {self.file}: not a readable .safetensors file ({str(err)[:100]}); pass "
                             f"a features file written by the bench, or a folder of images") from None
        name = "domain" if made_by == "eval_classifier" else made_by.split(":")[0]
        wrong = [n for n in nets if name and n != name]
        if wrong or (not name and len(nets) > 1):
            raise ValueError(f"--reference {self.file} holds features of {name or 'an unnamed network'}, and this "
                             f"run needs {', '.join(nets)}: pass reference images (a folder) so each network embeds "
                             f"them, or use --features {name or 'NAME'} alone (and drop cmmd unless it is clip)")

    def features_for(self, net: FeatureNet, device: torch.device) -> Reference:
        """The network's reference features: from the file, the cache, or computed and cached."""
        if self.file is not None or net.name in self.files:
            return Reference.load(self.file or self.files[net.name])
        key = hashlib.sha256(f"{CACHE_VERSION}|{self.digest()}|{net.fingerprint()}".encode()).hexdigest()[:32]
        cached = cache_root() / "references" / f"{net.name}-{key}.safetensors"
        if cached.is_file():
            try:
                return Reference.load(cached)
            except ValueError:
                pass  # a damaged cache file is recomputed
        reference = Reference.of(embed(net, self.batches(net), device))
        reference.save(cached, net.fingerprint())
        return reference


@torch.no_grad()
def embed(net: FeatureNet, batches: Iterator[Tensor], device: torch.device) -> Tensor:
    return torch.cat([net(images.to(device)).float().cpu() for images in batches])


def load_image(path: Path) -> Tensor:
    """uint8 [1, 3, H, W] of an image file, in RGB."""
    with Image.open(path) as img:
        return torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1).unsqueeze(0)


def file_batches(files: list[Path], net: FeatureNet, batch: int = 64) -> Iterator[Tensor]:
    """Images as uint8 batches: as they are when all share one size (the network resizes them as it does
    samples), else each brought to the network's input size first (bicubic, antialiased)."""
    sizes = set()
    for f in files:
        with Image.open(f) as img:
            sizes.add(img.size)
    for lo in range(0, len(files), batch):
        images = [load_image(f) for f in files[lo:lo + batch]]
        if len(sizes) > 1:
            images = [resize_uint8(x, net.size) for x in images]
        yield torch.cat(images)


def folder_digest(label: str, files: list[Path], root: Path) -> str:
    digest = hashlib.sha256(label.encode())
    for f in files:
        digest.update(f"{f.relative_to(root)}\0{file_digest(f)}\n".encode())
    return digest.hexdigest()


def made_by(path: Path) -> str:
    """The fingerprint of the network a features file was computed with ('' when unnamed or unreadable)."""
    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("feature_net", "")
    except (SafetensorError, OSError):
        return ""


def default_source(clip_fingerprint: str | None = None) -> ReferenceSource:
    """The default evaluators' real images (the zoo's: the 32 px emoji dataset it was trained on). The domain
    network reads their committed features, and so does CMMD's CLIP when it is the network they were
    computed with (`clip_fingerprint`); any other network embeds the images."""
    kit = domain_evaluators()
    files = {"domain": kit.reference_features}
    if clip_fingerprint is not None and made_by(kit.reference_clip_features) == clip_fingerprint:
        files["clip"] = kit.reference_clip_features
    return ReferenceSource(kit.reference_name, lambda: kit.real_images_checksum(kit.image_size),
                           lambda net: kit.real_images(kit.image_size), files=files)


def reference_source(path: str | None, images: str | None = None, clip_fingerprint: str | None = None) -> ReferenceSource:
    """The source --reference names (None: the zoo's emoji dataset), checked before any sampling.
    `clip_fingerprint`: the fingerprint of the run's CLIP network, when the run embeds with one."""
    if path is None:
        return default_source(clip_fingerprint)
    p = Path(path)
    if p.is_dir():
        files = image_files(p)
        if not files:
            raise ValueError(f"--reference {path}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                             f"pass a folder of reference images, a COCO captions json, or a features .safetensors")
        return ReferenceSource(f"folder:{p}", lambda: folder_digest("folder", files, p),
                               lambda net: file_batches(files, net), images=files)
    if not p.is_file():
        raise ValueError(f"--reference {path}: not found; pass a folder of images, a COCO captions json with "
                         f"--reference-images DIR, or a features .safetensors")
    if p.suffix == ".safetensors":
        return ReferenceSource(f"file:{p}", lambda: file_digest(p), lambda net: iter(()), file=p)
    if p.suffix == ".json":
        folder = Path(images) if images else p.parent
        if not folder.is_dir():
            raise ValueError(f"--reference-images {folder}: not a folder; pass the folder of the COCO images")
        files = coco_image_files(p, folder)
        return ReferenceSource(f"coco:{p}", lambda: folder_digest(f"coco:{file_digest(p)}", files, folder),
                               lambda net: file_batches(files, net), images=files)
    raise ValueError(f"--reference {path}: unknown kind ({p.suffix or 'no suffix'}); pass a folder of images, a "
                     f"COCO captions .json (with --reference-images DIR), or a features .safetensors")

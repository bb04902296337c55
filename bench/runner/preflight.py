"""Every check of a run's input that needs no model, run right after the config is parsed.

A GPU run samples for hours before it scores, so whatever can be known up front is checked here, in one
place, before a model loads: the settings (BenchConfig.validate), the output directory, the reference
images or features file, a mask file, and a diffusers pipeline folder's files. Each refusal is one
ValueError naming the flag and the fix (bench.runner.failure turns it into one line and exit code 2).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from bench.runner.config import BenchConfig
from bench.evaluators.reference import check_features_file, reference_source
from bench.runner.store import load_prompt_set
from guidance.evaluation import domain_evaluators
from guidance.models import source_of
from guidance.checkpoints import CheckpointError, check_kind

MAX_IMAGE_PIXELS = 8192 * 8192  # larger reference images are refused unread (a decompression bomb decodes to GiBs)
MIN_REFERENCE = 2  # a covariance (FID) and a nearest neighbour (precision/recall) need two images at least


def preflight(cfg: BenchConfig) -> None:
    """Refuse bad input before any model loads or sample is drawn."""
    cfg.validate()
    prompts = load_prompt_set(cfg)
    source, rest = source_of(cfg.model)
    if source.domain == domain_evaluators().domain:  # its metrics stay as asked (another's are settled once it loads)
        check_sample_count(cfg, len(prompts))
    check_output(cfg.out, cfg.run_id)
    check_reference(cfg.reference, cfg.reference_images)
    try:
        source.check(rest, cfg.batch_size)
    except CheckpointError as err:
        raise ValueError(f"--model {cfg.model}: {err}") from None


def check_checkpoint(path: Path, flag: str, kind: str, fix: str) -> None:
    """A checkpoint a flag names (or defaults to): present, safetensors, of `kind` (its header only)."""
    try:
        check_kind(path, kind, fix)
    except CheckpointError as err:
        raise ValueError(f"{flag} {err}") from None


def check_sample_count(cfg: BenchConfig, prompts: int) -> None:
    """FID's and KID's covariances need two samples per cell (one prompt and one sample crashed in LAPACK)."""
    n = prompts * cfg.samples_per_prompt
    if ("fid" in cfg.metrics or "kid" in cfg.metrics) and n < 2:
        raise ValueError(f"FID and KID need at least 2 samples per cell, and {prompts} prompt(s) x "
                         f"{cfg.samples_per_prompt} sample(s) per prompt make {n}; raise --prompt-limit or "
                         f"--samples-per-prompt, or drop fid/kid from --metrics")


def check_output(out: str, run_id: str | None) -> None:
    """The run directory can be created and written, probed without creating anything."""
    target = Path(out) / (run_id or "run")
    existing = target
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out {out} is not writable: {existing} is not a directory; choose another --out")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ValueError(f"--out {out} is not writable: {existing} refuses new files ({err.strerror}); choose another "
                         f"--out") from None


def check_reference(path: str | None, images: str | None) -> None:
    """Reference images opened and verified (at least MIN_REFERENCE), or a features file's header read."""
    if path is None:
        if images is not None:
            raise ValueError(f"--reference-images {images} is the image folder of a COCO captions json --reference; "
                             f"pass that json with --reference, or drop --reference-images")
        return
    if images is not None and not path.endswith(".json"):
        raise ValueError(f"--reference-images {images} applies to a COCO captions json --reference only, and "
                         f"--reference is {path}; drop --reference-images")
    source = reference_source(path, images)
    if source.file is not None:
        check_features_file(source.file, MIN_REFERENCE)
        return
    flag = "--reference-images" if path.endswith(".json") else "--reference"
    if len(source.images) < MIN_REFERENCE:
        raise ValueError(f"--reference {path} holds {len(source.images)} image(s); FID's covariance and "
                         f"precision/recall need at least {MIN_REFERENCE} (thousands for a stable FID)")
    for image in tqdm(source.images, desc="checking reference images", unit="img", disable=len(source.images) < 500,
                      dynamic_ncols=True):
        check_image(image, flag)


def check_image(path: Path, flag: str) -> None:
    """An image PIL can open, verify and decode, of at most MAX_IMAGE_PIXELS pixels (checked before decoding)."""
    if not path.is_file():
        raise ValueError(f"{flag} {path}: not found; pass an existing image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise ValueError(f"{flag} {path}: {width}x{height} pixels is more than this suite decodes "
                                     f"({MAX_IMAGE_PIXELS:,} pixels); downscale the image")
                img.verify()
            with Image.open(path) as img:
                img.draft("RGB", (256, 256))  # JPEG: decode at a reduced scale, enough to find damage
                img.load()
    except ValueError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError,
            SyntaxError, EOFError) as err:
        detail = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise ValueError(f"{flag} {path}: not a readable image ({detail}); replace or remove the file") from None

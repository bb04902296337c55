"""A diffusers pipeline folder's components checked from their files, before from_pretrained reads them.

guidance.sources.folder checks the folder's layout; this checks what each component holds, so that a
damaged or mismatched folder is refused in one line naming the component and the file instead of a
library's traceback (or, worse, a network "newly initialized" from random numbers): every config is a
JSON object, the scheduler's names a diffusers scheduler, every weights file opens as safetensors (its
header only: no tensor is read) and holds the tensors, of the shapes, that the component's config builds
(the network is built on the meta device, which allocates nothing), every tokenizer folder holds its
vocabulary, and one batch's latents and decoded images fit in this machine's memory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers
from safetensors import SafetensorError, safe_open

from guidance.sources.folder import read_index, read_json
from guidance.checkpoints import CheckpointError

WEIGHT_NAMES = {"diffusers": "diffusion_pytorch_model", "transformers": "model"}  # what from_pretrained opens
VOCABULARY = ("tokenizer.json", "vocab.json", "spiece.model", "vocab.txt", "tokenizer.model")
SAMPLE_BYTES = 4  # float32 per latent or pixel value
CONFIG_FIX = "restore the component from the pipeline's source (save_pretrained writes it)"


def check_pipeline_folder(root: Path, batch_size: int = 1, memory_bytes: int | None = None) -> None:
    """Every check above, for the folder `--model diffusers:PATH` names."""
    _, index = read_index(root)
    check_scheduler(root / "scheduler" / "scheduler_config.json")
    networks: dict[str, dict[str, Any]] = {}
    for component, entry in index.items():
        if not isinstance(entry, list) or entry[0] is None or not (root / component).is_dir():
            continue
        library, class_name = entry
        folder = root / component
        if component.startswith("tokenizer"):
            check_tokenizer(folder)
        elif library in WEIGHT_NAMES and (folder / "config.json").is_file():
            networks[component] = read_json(folder / "config.json", CONFIG_FIX)
            check_component(folder, library, class_name, networks[component])
    network = networks.get("unet") or networks.get("transformer")
    if network is not None:
        check_memory(root, network, networks.get("vae", {}), batch_size, memory_bytes or physical_memory())


def check_scheduler(path: Path) -> None:
    config = read_json(path, "restore scheduler/ from the pipeline's source")
    name = config.get("_class_name")
    if not isinstance(name, str) or not name.endswith("Scheduler") or not hasattr(diffusers, name):
        raise CheckpointError(f"{path}: \"_class_name\" {name!r} is not a diffusers scheduler class; restore "
                              f"scheduler/ from the pipeline's source")
    bad = next((k for k in ("num_train_timesteps",) if k in config and not (
        isinstance(config[k], int) and not isinstance(config[k], bool) and config[k] > 0)), None)
    if bad is not None:
        raise CheckpointError(f"{path}: \"{bad}\" is {config[bad]!r}, not a positive whole number; restore scheduler/ "
                              f"from the pipeline's source")


def check_tokenizer(folder: Path) -> None:
    found = [name for name in VOCABULARY if (folder / name).is_file()]
    if not found:
        raise CheckpointError(f"{folder} holds no tokenizer vocabulary ({', '.join(VOCABULARY)}); copy the "
                              f"tokenizer's files from the pipeline's source")
    if found == ["vocab.json"] and not (folder / "merges.txt").is_file():
        raise CheckpointError(f"{folder} has vocab.json without merges.txt (a BPE tokenizer needs both); copy the "
                              f"tokenizer's files from the pipeline's source")
    for name in ("tokenizer.json", "vocab.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            read_json(folder / name, "copy the tokenizer's files from the pipeline's source")


def weight_files(folder: Path, library: str) -> list[Path]:
    """The safetensors files from_pretrained would open: NAME.safetensors, or the shards its index lists."""
    name = WEIGHT_NAMES[library]
    single, index = folder / f"{name}.safetensors", folder / f"{name}.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        weight_map = read_json(index, "restore the weights' index from the pipeline's source").get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{index} has no \"weight_map\" of tensor names to shard files; restore it")
        shards = [folder / v for v in dict.fromkeys(weight_map.values())]
        missing = [p.name for p in shards if not p.is_file() or p.resolve().parent != folder.resolve()]
        if missing:
            raise CheckpointError(f"{index} lists shard {missing[0]}, which is not in {folder}; copy every shard")
        return shards
    present = sorted(p.name for p in folder.glob("*.safetensors"))
    if present:
        raise CheckpointError(f"{folder} holds {', '.join(present)} but from_pretrained opens {name}.safetensors "
                              f"(a variant such as fp16 is not loaded by default); re-save the pipeline with "
                              f"save_pretrained(DIR, safe_serialization=True)")
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".ckpt", ".pt", ".pth", ".pkl"))
    if pickled:
        raise CheckpointError(f"{folder} holds only pickled weights ({', '.join(pickled)}), which this suite never "
                              f"loads (unpickling runs code); convert them once with save_pretrained(DIR, "
                              f"safe_serialization=True)")
    raise CheckpointError(f"{folder} holds no weights ({name}.safetensors); copy the component's weights from its source")


def file_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from each safetensors header (nothing else of the file is read)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        try:
            with safe_open(str(path), "pt") as f:
                for key in f.keys():
                    shapes[key] = tuple(f.get_slice(key).get_shape())
        except (SafetensorError, OSError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{path} is not a readable safetensors file ({str(err)[:100] or type(err).__name__}); "
                                  f"it may be truncated or of another format: copy it again from its source") from None
    return shapes


def expected_shapes(folder: Path, library: str, class_name: str, config: dict[str, Any]) -> dict[str, tuple[int, ...]] | None:
    """Tensor name -> shape that the component's config builds (on the meta device), or None for a class this
    check does not know (from_pretrained then checks it)."""
    module = diffusers if library == "diffusers" else transformers
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
        return None
    try:
        with torch.device("meta"):
            if library == "diffusers":
                model = cls.from_config(config)
            else:
                model = cls(cls.config_class.from_pretrained(str(folder), local_files_only=True))
    except (TypeError, ValueError, KeyError, AttributeError, OSError, RuntimeError, OverflowError,
            ZeroDivisionError, AssertionError) as err:
        detail = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise CheckpointError(f"{folder / 'config.json'} does not build a {class_name} ({detail}); {CONFIG_FIX}") from None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_component(folder: Path, library: str, class_name: str, config: dict[str, Any]) -> None:
    """The component's weights open as safetensors and match its config's tensors and shapes."""
    files = weight_files(folder, library)
    found = file_shapes(files)
    wanted = expected_shapes(folder, library, class_name, config)
    if wanted is None:
        return
    wrong = next((k for k in wanted.keys() & found.keys() if wanted[k] != found[k]), None)
    if wrong is not None:
        raise CheckpointError(f"{files[0]}: tensor {wrong} is {list(found[wrong])} but {folder.name}/config.json "
                              f"builds {list(wanted[wrong])}: the weights are of another network than the config; use "
                              f"the weights and config of the same {class_name}")
    legacy = any(re.search(r"\.(query|key|value|proj_attn)\.", k) for k in found)  # diffusers renames these
    missing = sorted(k for k in wanted.keys() - found.keys() if not tied(k, found))
    if missing and not legacy:
        raise CheckpointError(f"{files[0]} lacks {len(missing)} of the {len(wanted)} tensors {folder.name}/config.json "
                              f"builds (e.g. {missing[0]}); they would run from random numbers: use the weights and "
                              f"config of the same {class_name}")


def tied(key: str, found: dict[str, tuple[int, ...]]) -> bool:
    """A tensor a transformers model ties to another one the file holds (T5's embeddings, a tied lm head)."""
    return key.endswith(("embed_tokens.weight", "lm_head.weight", "position_ids")) and any(
        k.endswith(("shared.weight", "embed_tokens.weight")) for k in found)


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**40  # unknown: no bound but an absurd one


def check_memory(root: Path, network: dict[str, Any], vae: dict[str, Any], batch_size: int, memory: int) -> None:
    """sample_size a positive size whose batch of latents and decoded images fits in RAM (before any is allocated)."""
    size, channels = network.get("sample_size"), network.get("in_channels", 4)
    name = "unet" if "cross_attention_dim" in network or "block_out_channels" in network else "transformer"
    sizes = size if isinstance(size, list) else [size, size]
    if len(sizes) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes) or \
            not isinstance(channels, int) or channels < 1:
        raise CheckpointError(f"{root / name / 'config.json'}: sample_size {size!r} and in_channels {channels!r} must be "
                              f"positive whole numbers; restore the config from the pipeline's source")
    stages = vae.get("block_out_channels") or vae.get("encoder_block_out_channels") or [1]  # AutoencoderKL or DC-AE
    scale = 2 ** max(len(stages) - 1, 0)
    pixels = sizes[0] * sizes[1]
    need = batch_size * pixels * SAMPLE_BYTES * (channels + 3 * scale * scale)
    if need > memory:
        raise CheckpointError(f"{root / name / 'config.json'}: sample_size {size} makes one batch of {batch_size} "
                              f"latents and decoded images alone {need / 2**30:,.1f} GiB, more than this machine's "
                              f"{memory / 2**30:,.1f} GiB of memory; fix sample_size (the pipeline's own is "
                              f"usually 32 to 128) or lower --batch-size")

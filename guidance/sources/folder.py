"""What a diffusers pipeline folder must hold, checked from its files before anything is loaded.

Every refusal is one line naming the problem and the fix: a path that does not exist, a single-file
checkpoint (diffusers would download its config), a pickled checkpoint (unpickling runs code), a
folder without model_index.json, a pipeline class the suite has no adapter for, a missing
component, or a component whose weights are pickled only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from guidance.checkpoints import CheckpointError

# pipeline class -> (family, components it cannot run without)
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "StableDiffusionPipeline": ("sd", ("unet", "vae", "scheduler", "text_encoder", "tokenizer")),
    "StableDiffusionXLPipeline": ("sdxl", ("unet", "vae", "scheduler", "text_encoder", "text_encoder_2",
                                           "tokenizer", "tokenizer_2")),
    "StableDiffusion3Pipeline": ("sd3", ("transformer", "vae", "scheduler", "text_encoder", "text_encoder_2",
                                         "tokenizer", "tokenizer_2")),
    "DiTPipeline": ("dit", ("transformer", "vae", "scheduler")),
    "FluxPipeline": ("flux", ("transformer", "vae", "scheduler", "text_encoder", "text_encoder_2", "tokenizer",
                              "tokenizer_2")),
    "PixArtSigmaPipeline": ("pixart", ("transformer", "vae", "scheduler", "text_encoder", "tokenizer")),
    "SanaPipeline": ("sana", ("transformer", "vae", "scheduler", "text_encoder", "tokenizer")),
}
PICKLED = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
WEIGHTED = ("unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
LAYOUT = "model_index.json, unet/ or transformer/, scheduler/, vae/ and text_encoder*/ tokenizer*/ as save_pretrained writes"


def check_file(path: Path) -> None:
    """Refuse a single file: pickled ones outright, a lone .safetensors because its config would be downloaded."""
    if path.suffix in PICKLED:
        raise CheckpointError(f"{path} is a pickled checkpoint, which this suite never loads (unpickling runs code); "
                              f"convert it to a safetensors pipeline folder (save_pretrained(DIR, "
                              f"safe_serialization=True)) and pass diffusers:DIR")
    if path.suffix == ".safetensors":
        raise CheckpointError(f"{path} is a single-file checkpoint without its config (diffusers would download one); "
                              f"convert it once where the config is at hand (Pipeline.from_single_file(FILE, config=CONFIG_DIR)"
                              f".save_pretrained(DIR)) and pass diffusers:DIR")
    raise CheckpointError(f"{path} is a file; --model diffusers:PATH takes a pipeline folder ({LAYOUT})")


def read_index(root: Path) -> tuple[str, dict[str, Any]]:
    """The folder's family and model_index.json, after checking every component it needs is there as safetensors."""
    if not root.exists():
        raise CheckpointError(f"diffusers pipeline folder not found: {root}; pass an existing folder ({LAYOUT})")
    if root.is_file():
        check_file(root)
    index_path = root / "model_index.json"
    if not index_path.is_file():
        raise CheckpointError(f"{root} has no model_index.json, so it is not a diffusers pipeline folder; pass the "
                              f"folder save_pretrained wrote ({LAYOUT})")
    index = read_json(index_path, "restore it from the pipeline's source")
    name = str(index.get("_class_name"))
    if name not in FAMILIES:
        raise CheckpointError(f"{root} holds a {name}, which the suite has no adapter for; supported: "
                              f"{', '.join(FAMILIES)}")
    family, required = FAMILIES[name]
    for component, entry in index.items():
        if (component in required or isinstance(entry, list)) and not is_entry(entry):
            raise CheckpointError(f"{index_path}: \"{component}\" is {json.dumps(entry)[:60]}, not [library, class] "
                                  f"(e.g. [\"diffusers\", \"UNet2DConditionModel\"]) or [null, null]; restore it "
                                  f"from the pipeline's source")
    for component in required:
        entry = index.get(component)
        if not is_entry(entry) or entry[0] is None or not (root / component).is_dir():
            raise CheckpointError(f"{root} lacks its {component}/ component (a {name} needs {', '.join(required)}); "
                                  f"save the whole pipeline with save_pretrained, or copy {component}/ from its source")
    for component in WEIGHTED:
        folder = root / component
        if isinstance(index.get(component), list) and index[component][0] is not None and folder.is_dir():
            check_weights(folder)
    return family, index


def is_entry(entry: Any) -> bool:
    """A model_index.json component: [library, class] names, or [null, null] for one left out."""
    return (isinstance(entry, list) and len(entry) == 2
            and all(isinstance(v, str) for v in entry) or entry == [None, None])


def read_json(path: Path, fix: str) -> dict[str, Any]:
    """A JSON object from a pipeline's config file, or one line naming the file and `fix`."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read ({err.strerror}); {fix}") from None
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({str(err)[:100] or type(err).__name__}); {fix}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, not an object of settings; {fix}")
    return data


def check_weights(folder: Path) -> None:
    """A component's weights must be safetensors (a pickled-only component is refused, not unpickled)."""
    if any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLED)
    if pickled:
        raise CheckpointError(f"{folder} holds only pickled weights ({', '.join(pickled)}), which this suite never "
                              f"loads; re-save the pipeline with save_pretrained(DIR, safe_serialization=True)")
    raise CheckpointError(f"{folder} holds no weights (*.safetensors); copy the component's weights from its source")


def null_components(index: dict[str, Any]) -> dict[str, None]:
    """Components model_index.json records as absent (SD3 without T5): passed as None when loading."""
    return {k: None for k, v in index.items() if isinstance(v, list) and len(v) == 2 and v[0] is None}

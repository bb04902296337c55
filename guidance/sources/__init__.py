"""Model sources besides the embedded zoo: each turns something on disk into a ModelBundle.

`diffusers:PATH` (guidance.sources.pipeline) loads a local diffusers pipeline folder; `tiny` writes
tiny random-weight pipelines of every supported family for tests, benchmarks and a first try on the
CPU. diffusers and transformers are the optional `diffusers` extra, imported only by those modules.
"""

DIFFUSERS_PREFIX = "diffusers:"  # how --model names a diffusers pipeline folder
# optional, in a pipeline folder: the clean CLIP universal-clip follows, as a zoo-format file (open_clip config in
# its metadata) or as {"arch": open_clip name, "pretrained": local weights file} naming an open_clip model
GUIDING_CLIP = "guiding_clip.safetensors"
GUIDING_CLIP_SPEC = "guiding_clip.json"

"""PixArt-Sigma (`PixArtSigmaPipeline` folders): a PixArtTransformer2DModel on T5 states with their attention mask.

Conditions are the pipeline's `encode_prompt` with its `__call__` defaults: the caption cleaned where the
pipeline can clean it (`clean_caption=True`, which diffusers turns off, warning at every call, without bs4 and
ftfy: the suite asks for it only where both are installed, to the same effect without the warnings), T5 states
padded to `max_sequence_length` (300, or the tokenizer's shorter model_max_length: the tiny pipelines' 32) and
the padding mask the transformer's cross-attention uses. The null condition is the empty prompt through the
same path (the pipeline's `negative_prompt=""`). The transformer is told the scheduler's integer timestep and
no micro-conditions (the pipeline's `added_cond_kwargs` are None); its learned-sigma channels ride along and
are dropped by the denoiser, as the pipeline drops them after CFG (CFG is linear, so the order is immaterial).
The pipeline's resolution binning maps the default square size onto itself; other sizes are not sampled.
"""

from __future__ import annotations

from typing import Sequence

from diffusers.utils import is_bs4_available, is_ftfy_available
from torch import Tensor

from guidance.protocols import ModelCond
from guidance.sources.families import FamilyNet

MAX_SEQUENCE_LENGTH = 300  # PixArtSigmaPipeline's default T5 length
NO_MICRO_CONDITIONS = {"resolution": None, "aspect_ratio": None}  # PixArtSigmaPipeline's added_cond_kwargs
CLEAN_CAPTION = is_bs4_available() and is_ftfy_available()  # __call__'s clean_caption=True, as diffusers runs it


class PixArtNet(FamilyNet):
    """PixArtTransformer2DModel(x, t, T5 states, their mask) as the pipeline calls it."""

    @property
    def max_sequence_length(self) -> int:
        return min(MAX_SEQUENCE_LENGTH, int(self.pipe.tokenizer.model_max_length))

    def forward(self, x: Tensor, t: Tensor, cond: dict[str, Tensor]) -> Tensor:
        return self.network(x, encoder_hidden_states=cond["text"], encoder_attention_mask=cond["mask"], timestep=t,
                            added_cond_kwargs=NO_MICRO_CONDITIONS, return_dict=False)[0]

    def encode(self, texts: Sequence[str], labels: Tensor | None) -> ModelCond:
        embeds, mask, _, _ = self.pipe.encode_prompt(list(texts), False, device=self.device, clean_caption=CLEAN_CAPTION,
                                                     max_sequence_length=self.max_sequence_length)
        return {"text": embeds, "mask": mask}

    def encode_null(self) -> ModelCond:
        return self.encode([""], None)

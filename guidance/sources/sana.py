"""Sana (`SanaPipeline` folders): a linear-attention SanaTransformer2DModel on Gemma-2 states, a DC-AE, flow matching.

Prompts go through the pipeline's `encode_prompt` as its `__call__` applies it: the complex human
instruction (the `complex_human_instruction` default of SanaPipeline.__call__, read from its signature)
prefixed to each prompt, the Gemma states of the first token and the last `max_sequence_length - 1` kept,
with their mask. Negative prompts and the null condition (the empty prompt) are encoded without the
instruction, as the pipeline encodes `negative_prompt`. The transformer is told the scheduler's timestep
times the config's `timestep_scale`. The flow process and its trajectory come from the scheduler config
(guidance.sources.schedule: the shipped flow DPM-Solver, `use_flow_sigmas` with `flow_shift`, or
FlowMatchEuler).
"""

from __future__ import annotations

import inspect
from typing import Sequence

from torch import Tensor

from guidance.protocols import ModelCond
from guidance.sources.families import FamilyNet

MAX_SEQUENCE_LENGTH = 300  # SanaPipeline's default Gemma length (after the instruction)


class SanaNet(FamilyNet):
    """SanaTransformer2DModel(x, t * timestep_scale, Gemma states, their mask) as the pipeline calls it."""

    @property
    def max_sequence_length(self) -> int:
        return min(MAX_SEQUENCE_LENGTH, int(self.pipe.tokenizer.model_max_length))

    @property
    def instruction(self) -> list[str]:
        """The complex human instruction SanaPipeline.__call__ applies by default."""
        return list(inspect.signature(type(self.pipe).__call__).parameters["complex_human_instruction"].default)

    def forward(self, x: Tensor, t: Tensor, cond: dict[str, Tensor]) -> Tensor:
        return self.network(x, encoder_hidden_states=cond["text"], encoder_attention_mask=cond["mask"],
                            timestep=t * self.network.config.timestep_scale, return_dict=False)[0]

    def _encode(self, texts: Sequence[str], instruction: list[str] | None) -> ModelCond:
        embeds, mask, _, _ = self.pipe.encode_prompt(list(texts), False, device=self.device,
                                                     max_sequence_length=self.max_sequence_length,
                                                     complex_human_instruction=instruction)
        return {"text": embeds, "mask": mask}

    def encode(self, texts: Sequence[str], labels: Tensor | None) -> ModelCond:
        return self._encode(texts, self.instruction)

    def encode_negative(self, texts: Sequence[str]) -> ModelCond:
        return self._encode(texts, None)

    def encode_null(self) -> ModelCond:
        return self.encode_negative([""])

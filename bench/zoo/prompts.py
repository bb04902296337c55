"""Built-in prompt sets over the embedded zoo's label space: emoji names with identity labels."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache

from bench.prompts.readers import Prompt, PromptSet, builtin_prompt_sets, register_builtin
from guidance.zoo.load import ZOO_DIR

FIXED_SET_SIZE = 200


@lru_cache(maxsize=1)
def emoji_labels() -> dict:
    """The classifiers' label space (identity, subgroup and group names), committed beside the zoo."""
    return json.loads((ZOO_DIR / "labels.json").read_text())


def _prompt(identity: int, labels: dict) -> Prompt:
    sub = labels["identity_subgroup"][identity]
    group = labels["group_names"][labels["identity_group"][identity]]
    return Prompt(text=labels["identity_names"][identity], label=identity, category=group,
                  meta={"subgroup": labels["subgroup_names"][sub], "codepoints": labels["identity_codepoints"][identity]})


def emoji_all() -> PromptSet:
    labels = emoji_labels()
    prompts = tuple(_prompt(i, labels) for i in range(len(labels["identity_names"])))
    return PromptSet("emoji-all", prompts, "builtin:emoji-all")


def emoji200() -> PromptSet:
    """A fixed 200-identity subset: ordered by a hash of the name, so it never changes with code or seeds."""
    labels = emoji_labels()
    order = sorted(range(len(labels["identity_names"])),
                   key=lambda i: hashlib.sha256(labels["identity_names"][i].encode()).hexdigest())
    prompts = tuple(_prompt(i, labels) for i in order[:FIXED_SET_SIZE])
    return PromptSet("emoji200", prompts, "builtin:emoji200")


def register() -> None:
    if "emoji200" not in builtin_prompt_sets():
        register_builtin("emoji200", emoji200, "200 fixed emoji names with identity labels (classifier guidance works)")
        register_builtin("emoji-all", emoji_all, "all 1,870 emoji names with identity labels")


register()

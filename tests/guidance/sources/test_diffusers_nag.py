"""NAG inside diffusers' attention: the mix lands on the image tokens' attention output before the output
projection of every cross (UNet, PixArt, Sana) or joint (SD3) attention layer, on the positive rows only."""

from __future__ import annotations

import pytest
import torch

from guidance.guiders import make_guidance
from guidance.internals import nag_mix
from guidance.models import load_bundle
from guidance.samplers import sample

pytest.importorskip("diffusers", reason="diffusers is not installed (the `diffusers` extra)")
pytestmark = pytest.mark.filterwarnings("ignore")

PROMPTS = ["a red cat on a mat", "two dogs"]


def text_attention(network: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in network.modules() if hasattr(m, "set_processor")
            and (getattr(m, "is_cross_attention", False) or getattr(m, "added_kv_proj_dim", None) is not None)]


@pytest.mark.parametrize("family", ["sd", "sd3", "pixart", "sana"])
def test_nag_mixes_the_first_text_layer_and_phi_zero_is_the_model(tiny_pipeline, family):
    bundle = load_bundle(f"diffusers:{tiny_pipeline(family)}")  # its checkpoint's shipped scheduler
    layers = text_attention(bundle.net.network)
    assert layers
    raw, mixed = [], []
    first = layers[0].to_out[0]
    handles = [first.register_forward_pre_hook(lambda _m, args: raw.append(args[0].clone())),  # before NAG's hook
               first.register_forward_hook(lambda _m, args, _out: mixed.append(args[0].clone()))]
    x_T = torch.randn(2, *bundle.sample_shape, generator=torch.Generator().manual_seed(0))
    negative = ["blurry", "dark"]
    run = lambda guidance, negative=negative: sample(  # noqa: E731
        bundle.denoiser, bundle.process, bundle.process.sigmas(2), guidance, bundle.conditions(PROMPTS, negative=negative),
        bundle.sample_shape, [0, 1], sampler=bundle.default_sampler, x_T=x_T, clip_denoised=False)
    try:
        with torch.no_grad():
            guided = run(make_guidance("nag", 3.0, tau=2.5, alpha=0.5))
    finally:
        for handle in handles:
            handle.remove()
    z, out = raw[0], mixed[0]
    assert z.shape[0] == 4  # positive and negative rows in one forward
    assert torch.allclose(out[:2], nag_mix(z[:2], z[2:], 3.0, 2.5, 0.5), atol=1e-6)
    assert torch.equal(out[2:], z[2:])
    with torch.no_grad():
        identity = run(make_guidance("nag", 0.0))
        plain = run(make_guidance("cfg", 1.0), None)  # the conditional model alone
    assert torch.equal(identity, plain) and (identity - guided).abs().max() > 1e-4
    assert torch.isfinite(bundle.decode(guided)).all()  # end to end: the guided latents decode
    assert not first._forward_pre_hooks  # NAG's hook is removed after each pass

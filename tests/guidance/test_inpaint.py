"""Inpainting samplers: the known region is kept exactly, RePaint's schedule and NFE, GLIDE's x0 overwrite,
and the conditioned UNet's zero-initialised channels (its output equals the base model's exactly)."""

from __future__ import annotations

import pytest
import torch

from guidance.denoisers import NetworkDenoiser
from guidance.diffusion import GaussianDiffusion
from guidance.guiders import make_guidance
from guidance.inpaint import KnownX0, Resampling, inpaint, nfe
from guidance.masks import masks_for
from guidance.process import VE, VPDiscrete
from guidance.protocols import Conditions
from guidance.samplers import SAMPLERS
from guidance.samplers.base import Denoise
from guidance.zoo.conditioned import ConditionedUNet, inpaint_condition, upsample_condition
from guidance.zoo.unet import TextUNet, UNetConfig

CONFIG = UNetConfig(channels=16, text_width=32, text_layers=1, vocab_size=40, dropout=0.0,
                    extra={"schedule": "cosine", "num_timesteps": 1000})


def tiny_base(seed: int = 0) -> TextUNet:
    torch.manual_seed(seed)
    model = TextUNet(CONFIG).eval()
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised layers too: the output must not be trivially 0
            p.add_(0.02 * torch.randn_like(p))
    return model


def tokens(n: int) -> torch.Tensor:
    t = torch.randint(2, 40, (n, CONFIG.context_length + 1), generator=torch.Generator().manual_seed(1))
    t[:, -1] = 4
    return t


def test_zero_initialised_channels_give_the_base_models_output_exactly():
    base = tiny_base()
    model = ConditionedUNet.from_base(base, 4).eval()
    x, t = torch.randn(3, 3, 32, 32), torch.tensor([3, 400, 999])
    known, hole = torch.rand(3, 3, 32, 32) * 2 - 1, masks_for("box", [0, 1, 2], 32)
    with torch.no_grad():
        assert torch.equal(model(x, t, inpaint_condition(tokens(3), known, 1 - hole)), base(x, t, tokens(3)))
        assert torch.equal(model.null_cond(inpaint_condition(tokens(3), known, 1 - hole))["tokens"],
                           base.null_cond(tokens(3)))
        with torch.no_grad():
            model.cond_stem.weight.add_(0.1)
        assert not torch.equal(model(x, t, inpaint_condition(tokens(3), known, 1 - hole)), base(x, t, tokens(3)))


def test_sigma_gated_branch_is_the_base_model_at_step_0_and_scales_by_the_noise_level():
    base = tiny_base()
    model = ConditionedUNet.from_base(base, 4, cond_gate="sigma").eval()
    x, t = torch.randn(3, 3, 32, 32), torch.tensor([0, 400, 999])
    known, hole = torch.rand(3, 3, 32, 32) * 2 - 1, masks_for("box", [0, 1, 2], 32)
    cond = inpaint_condition(tokens(3), known, 1 - hole)
    with torch.no_grad():
        assert torch.equal(model(x, t, cond), base(x, t, tokens(3)))  # exactly the base at step 0
        model.cond_stem.weight.normal_()
        # the gate is sqrt(1 - alpha_bar_t) of the config's schedule (the noise std of x_t)
        abar = GaussianDiffusion.from_schedule("cosine", 1000).alphas_cumprod
        gate = model.gate(torch.tensor([0.0, 400.0, 999.0, 400.5]))
        expected = torch.tensor([(1 - abar[0]) ** 0.5, (1 - abar[400]) ** 0.5, (1 - abar[999]) ** 0.5,
                                 ((1 - abar[400]) ** 0.5 + (1 - abar[401]) ** 0.5) / 2])
        torch.testing.assert_close(gate, expected.float(), rtol=1e-6, atol=0)  # float32 table
        assert float(gate[0]) < 0.01 and float(gate[2]) > 0.999
        ungated = model.cond_stem(cond["image"])
        torch.testing.assert_close(model.condition_features(t, cond["image"]), ungated * gate[:3, None, None, None])
        # nearly the base where the known region cannot help, the condition's full effect at high noise
        step0 = base(x, t, tokens(3))
        change = (model(x, t, cond) - step0).abs().flatten(1).mean(1)
        plain = ConditionedUNet.from_base(base, 4).eval()
        plain.cond_stem.weight.copy_(model.cond_stem.weight)
        ungated_change = (plain(x, t, cond) - step0).abs().flatten(1).mean(1)
        assert change[0] < 0.1 * ungated_change[0] and torch.allclose(change[2], ungated_change[2], rtol=1e-3)
    with pytest.raises(ValueError, match="unknown cond_gate"):
        ConditionedUNet.from_base(base, 4, cond_gate="linear")


def test_upsampler_embeds_its_augmentation_level_from_zero():
    cfg = UNetConfig(image_size=16, channels=8, channel_mult=(1, 2), attention_resolutions=(8,), text_width=16,
                     text_layers=1, vocab_size=40, dropout=0.0, extra={"cond_channels": 3, "noise_aug": True})
    model = ConditionedUNet(cfg).eval()
    low = torch.rand(2, 3, 8, 8) * 2 - 1
    cond = upsample_condition(tokens(2), low, 16, torch.tensor([0, 100]))
    assert cond["image"].shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="does not fit this model"):
        model(torch.randn(2, 3, 16, 16), torch.tensor([1, 2]), {**cond, "image": low})


def replace_setup(n: int = 3):
    base = tiny_base()
    known = torch.rand(n, 3, 32, 32) * 2 - 1
    hole = masks_for("strokes", list(range(n)), 32)
    return NetworkDenoiser(base, "eps", True), known, hole


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "flow-euler"])
@pytest.mark.parametrize("method", ["replace", "repaint"])
def test_training_free_inpainting_keeps_the_known_region_exactly(sampler, method):
    denoiser, known, hole = replace_setup()
    process = VPDiscrete.from_schedule("cosine", 1000)
    out = inpaint(denoiser, process, process.sigmas(6), make_guidance("cfg", 3.0), Conditions(tokens(3)), known,
                  hole, [0, 1, 2], method, sampler=sampler, resampling=Resampling(2, 2))
    keep = (hole == 0).expand_as(out)
    assert torch.equal(out[keep], known[keep])
    assert not torch.equal(out[~keep], known[~keep])
    assert bool(torch.isfinite(out).all())


def test_inpainting_does_not_depend_on_the_batch():
    denoiser, known, hole = replace_setup(4)
    process = VPDiscrete.from_schedule("cosine", 1000)
    run = lambda idx: inpaint(denoiser, process, process.sigmas(4), make_guidance("cfg", 2.0),  # noqa: E731
                              Conditions(tokens(4)[idx]), known[idx], hole[idx], idx, "repaint", seed=5,
                              sampler="ddpm", resampling=Resampling(2, 2))
    whole = run([0, 1, 2, 3])
    assert torch.allclose(torch.cat([run([0, 1]), run([2, 3])]), whole, atol=1e-5)


def test_replacement_works_on_a_ve_process_too():
    denoiser, known, hole = replace_setup()
    process = VE(0.01, 20.0)
    out = inpaint(lambda x, level, cond: denoiser(x, VPDiscrete.from_schedule().level(level.sigma), cond),  # type: ignore[arg-type]
                  process, process.sigmas(4), make_guidance("none", 0.0), Conditions(tokens(3)), known, hole,
                  [0, 1, 2], "replace", sampler="euler")
    keep = (hole == 0).expand_as(out)
    assert torch.equal(out[keep], known[keep])


def test_glide_sampler_overwrites_x0_at_every_evaluation():
    base = tiny_base()
    model = NetworkDenoiser(ConditionedUNet.from_base(base, 4).eval(), "eps", True)
    known, hole = torch.rand(2, 3, 32, 32) * 2 - 1, masks_for("center", [0, 1], 32)
    cond = Conditions(inpaint_condition(tokens(2), known, 1 - hole))
    process = VPDiscrete.from_schedule("cosine", 1000)
    sigmas = process.sigmas(5)
    wrapped = KnownX0(Denoise(model, make_guidance("cfg", 3.0), cond, sigmas), known, 1 - hole)
    level = process.level(sigmas[1])
    with torch.no_grad():
        pred = wrapped(torch.randn(2, 3, 32, 32) * level.s, level)
    keep = (hole == 0).expand_as(known)
    assert torch.allclose(pred.x0[keep], known[keep])
    out = inpaint(model, process, sigmas, make_guidance("cfg", 3.0), cond, known, hole, [0, 1], "model")
    assert torch.equal(out[keep], known[keep])


def test_repaint_schedule_and_its_extra_model_evaluations():
    plain = Resampling(3, 1)
    assert plain.moves(6) == [(i, i + 1) for i in range(6)]
    moves = Resampling(3, 2).moves(6)
    assert moves == [(0, 1), (1, 2), (2, 3), (3, 0), (0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)]
    assert Resampling(3, 3).denoising_steps(6) == 6 + 2 * 3
    sigmas = VPDiscrete.from_schedule().sigmas(6)
    assert nfe("replace", sigmas, "ddim") == 6 and nfe("repaint", sigmas, "ddim", Resampling(3, 2)) == 9
    assert nfe("repaint", sigmas, "heun", Resampling(3, 2)) == 9 * 2 - 1  # Heun's last step has one evaluation
    with pytest.raises(ValueError, match="jump >= 1 and resample >= 1"):
        Resampling(0, 2)


def test_inputs_that_do_not_fit_are_refused_before_sampling():
    denoiser, known, hole = replace_setup()
    process = VPDiscrete.from_schedule()
    with pytest.raises(ValueError, match="masks .* do not fit the sources"):
        inpaint(denoiser, process, process.sigmas(2), make_guidance("none", 0.0), Conditions(tokens(3)), known,
                hole[:2], [0, 1, 2])
    with pytest.raises(ValueError, match="unknown inpainting method 'paste'"):
        inpaint(denoiser, process, process.sigmas(2), make_guidance("none", 0.0), Conditions(tokens(3)), known,
                hole, [0, 1, 2], "paste")


class RecordingZeroEps(torch.nn.Module):
    """eps = 0 everywhere; keeps every input it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return torch.zeros_like(x)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_replacement_redraws_the_known_region_at_the_new_level(sampler):
    """What the model sees of the kept region at step i is a fresh draw of q(x_t | x0) at level i: mean
    alpha_i x0, std s_i. (The final paste makes the output's kept region exact whatever level it was drawn at.)"""
    n, value = 8, 0.5
    known = torch.full((n, 3, 32, 32), value)
    hole = torch.zeros(n, 1, 32, 32)
    hole[..., :16] = 1  # regenerate the left half; the right half (12,288 values) is redrawn at each step
    process = VPDiscrete.from_schedule("cosine", 1000)
    sigmas = process.sigmas(5)
    net = RecordingZeroEps()
    inpaint(NetworkDenoiser(net, "eps"), process, sigmas, make_guidance("none", 0.0), Conditions(torch.zeros(n)),
            known, hole, list(range(n)), "replace", sampler=sampler, clip_denoised=False)
    levels = process.levels(sigmas)
    assert len(net.inputs) == len(sigmas) - 1
    for level, x in list(zip(levels, net.inputs))[1:]:
        z = (x[..., 16:] - level.alpha * value) / level.s  # N(0, 1) when drawn at this level
        assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.03, f"sigma {level.sigma:.3g}"

"""The inpainting fine-tune's diagnostics: fixed draws, the hole error against a hand computation, paired
differences against step 0, and the caption gain."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from guidance.diffusion import GaussianDiffusion
from guidance.zoo.inpaint_diagnostics import (BUCKETS, CAPTION_RANGE, caption_rows, hole_errors, make_draws, markdown,
                                              measure, selection_score, summarise)

N, SIZE = 60, 16
DIFFUSION = GaussianDiffusion.from_schedule("cosine", 1000)


def draws():
    g = torch.Generator().manual_seed(5)
    images = torch.rand(10, 3, SIZE, SIZE, generator=g) * 2 - 1
    tokens = torch.randint(2, 40, (10, 17), generator=g)
    return make_draws(images, tokens, torch.zeros(17, dtype=torch.long), N)


class Constant(nn.Module):
    """Predicts `value` (eps channels) everywhere, and more when it is given the caption: a model whose hole
    error is known in closed form."""

    def __init__(self, value: float, caption_bonus: float = 0.0) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value))
        self.caption_bonus = caption_bonus

    def forward(self, x: Tensor, t: Tensor, cond: dict) -> Tensor:
        has_caption = (cond["tokens"] != 0).any(1).float()[:, None, None, None]
        eps = self.value + self.caption_bonus * has_caption + 0 * x
        return torch.cat([eps, torch.zeros_like(x)], 1)


def test_draws_are_fixed_stratified_and_the_edited_one_is_moved_and_8_bit():
    a, b = draws(), draws()
    assert torch.equal(a["plain"].x0, b["plain"].x0) and torch.equal(a["edited"].x0, b["edited"].x0)
    plain, edited = a["plain"], a["edited"]
    assert torch.equal(plain.hole, edited.hole) and torch.equal(plain.noise, edited.noise)
    assert torch.equal(plain.t, edited.t)
    for lo, hi in BUCKETS:  # stratified: each bucket holds its share of the draw
        assert int(((plain.t >= lo) & (plain.t < hi)).sum()) == N * (hi - lo) // 1000
    assert not torch.allclose(plain.x0, edited.x0)
    levels = (edited.x0 + 1) * 127.5
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)  # saved as 8-bit, like the benchmark


def test_hole_error_is_the_mean_squared_noise_error_inside_the_hole():
    d = draws()["plain"]
    err = hole_errors(Constant(0.5), DIFFUSION, d)
    expected = torch.stack([((n - 0.5) ** 2 * h).sum() / (3 * h.sum()) for n, h in zip(d.noise, d.hole)])
    torch.testing.assert_close(err, expected, rtol=1e-5, atol=0)  # float32 sums of ~800 terms


def test_figures_against_step0_and_the_caption_gain():
    d = draws()
    step0 = measure(Constant(0.5), DIFFUSION, d)
    same = summarise(step0, d, reference=step0)
    assert same["plain"]["hole_mse_given_minus_step0"] == 0 and same["plain"]["hole_mse_given_minus_step0_ci"] == [0, 0]
    assert same["plain"]["caption_gain_t300_900"] == 0  # the caption changes nothing
    better = measure(Constant(0.0), DIFFUSION, d)  # eps = 0 is the noise's mean: the smallest constant error
    report = summarise(better, d, reference=step0)
    for source in ("plain", "edited"):
        lo, hi = report[source]["hole_mse_given_minus_step0_ci"]
        assert hi < 0 and report[source]["hole_mse_given_minus_step0"] < 0
    assert selection_score(step0, step0) == 1 and selection_score(better, step0) < 1
    plain_worse = {**better, "plain/given": step0["plain/given"] * 1.1}  # edited better, plain 10% worse
    assert selection_score(plain_worse, step0) == pytest.approx(1.1)
    table = markdown(report)  # the card: the figure, step 0's and the paired difference, per source
    given = report["plain"]["hole_mse_given"]
    step0_given = summarise(step0, d)["plain"]["hole_mse_given"]
    assert f"| plain | hole MSE, mask channels given, all t | {given:.5f} | {step0_given:.5f} |" in table
    assert table.count("caption gain") == 2 and table.count("| edited |") == 2 * 5 + 1
    # the caption moves the prediction from 0.5 to 0: the gain is 1 - E(n^2) / E((n - 0.5)^2) on those rows
    listens = measure(Constant(0.5, caption_bonus=-0.5), DIFFUSION, d)
    rows = caption_rows(d["plain"])
    assert torch.all((d["plain"].t[rows] >= CAPTION_RANGE[0]) & (d["plain"].t[rows] < CAPTION_RANGE[1]))
    gain = summarise(listens, d)["plain"]["caption_gain_t300_900"]
    expected = 1 - float(better["plain/given"][rows].mean()) / float(step0["plain/given"][rows].mean())
    assert abs(gain - expected) < 1e-4 and gain > 0.1

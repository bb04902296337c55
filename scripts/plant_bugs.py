"""Plant known bugs one at a time in a scratch copy of the tree and check that a command catches each.

    python scripts/plant_bugs.py                       # golden tests vs the core bugs
    python scripts/plant_bugs.py --suite gate          # the CI quality gate vs its bugs
    python scripts/plant_bugs.py --suite methods       # tests/guidance/guiders vs bugs in the newer methods' formulas
    python scripts/plant_bugs.py --suite paths         # the loop's own x_T and inpainting's replacement draw

Each mutation is a literal text replacement that must match exactly once, so a refactor that
silently disarms a mutation fails loudly here instead.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MUTATIONS = {
    "cfg-sign-flip": ("guidance/prediction.py", "base.get(space) + scale * (self.get(space) - base.get(space))",
                      "base.get(space) - scale * (self.get(space) - base.get(space))"),
    "variance-channels-guided": ("guidance/guiders/cfg.py",
                                 "return pred_c.guided_by(pred_u, scale)",
                                 "return Prediction(x, step.level, pred_c.primary, pred_c.guided_by(pred_u, scale)"
                                 ".known[pred_c.primary], None if pred_c.var_values is None else pred_u.var_values "
                                 "+ scale * (pred_c.var_values - pred_u.var_values))"),
    # DDPM's mean shift Sigma * g (Dhariwal & Nichol, Algorithm 1) without the variance
    "gradient-without-sigma": ("guidance/samplers/ddpm.py",
                               "mean = mean + var * (grad if cur.vp_scale == 1.0 else grad * cur.vp_scale)",
                               "mean = mean + (grad if cur.vp_scale == 1.0 else grad * cur.vp_scale)"),
    # DDIM's (and every non-DDPM sampler's) score correction eps - sqrt(1 - abar) g, with sqrt(abar) instead
    "ddim-wrong-sqrt-factor": ("guidance/prediction.py",
                               "self.eps - self.level.s * grad", "self.eps - self.level.alpha * grad"),
    "classifier-gradient-dropped": ("guidance/guiders/classifier.py",
                                    "return lambda x_in: self.log_prob(x_in, step.t, labels)",
                                    "return lambda x_in: 0 * self.log_prob(x_in, step.t, labels)"),
    "clip-wrong-timestep": ("guidance/guiders/clip.py", "self.similarity(x_in, step.t, text_emb)",
                            "self.similarity(x_in, step.t.flip(0) * 0, text_emb)"),
    # TCFG projecting on the second (minor) singular direction instead of the principal one
    "tcfg-minor-direction": ("guidance/guiders/tcfg.py", "top = 0.5 * (a + d) + torch.sqrt(",
                             "top = 0.5 * (a + d) - torch.sqrt("),
    # MAMBO-G's ratio against the conditional's norm instead of the unconditional's
    "mambo-wrong-norm": ("guidance/guiders/mambo_g.py", "base = torch.linalg.vector_norm(u32,",
                         "base = torch.linalg.vector_norm(c32,"),
    # FDG's scales applied coarse-to-fine instead of fine-to-coarse
    "fdg-levels-reversed": ("guidance/guiders/fdg.py", "for w, p, c_i, u_i in zip(scales,",
                            "for w, p, c_i, u_i in zip(scales[::-1],"),
    # PAG / SEG / SLG pulling from the unconditional instead of the conditional prediction
    "perturbed-from-uncond": ("guidance/guiders/perturbed.py", "value = value + scale * (c - pred_p.get(space))",
                              "value = value + scale * (value - pred_p.get(space))"),
    # SEG's infinite blur as the identity (the limit of no blur, diffusers' swapped branches)
    "seg-blur-swapped": ("guidance/internals.py", "return q.mean(dim=-2, keepdim=True).expand_as(q)", "return q"),
    # APG-mix switching by the wrong side of sigma (APG first, CFG late)
    "apg-mix-phase-flipped": ("guidance/guiders/apg_mix.py", "return sigma > self.sigma_switch",
                              "return sigma <= self.sigma_switch"),
    # the loop's own x_T left at unit scale (a VE model's prior is sigma_max)
    "initial-noise-unscaled": ("guidance/samplers/loop.py", "x = x * scale", "x = x * 1.0"),
    # training-free inpainting's replacement drawn at the step's old level, or with sigma for s
    "replacement-old-level": ("guidance/inpaint.py", "noised(known, levels[to], known_noise.randn(shape))",
                              "noised(known, levels[frm], known_noise.randn(shape))"),
    "replacement-sigma-for-s": ("guidance/inpaint.py", "return known * level.alpha + noise * level.s",
                                "return known * level.alpha + noise * level.sigma"),
}
SUITES = {
    "core": (["cfg-sign-flip", "variance-channels-guided", "gradient-without-sigma", "ddim-wrong-sqrt-factor"],
             [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/guidance/guiders/test_golden.py"]),
    "methods": (["tcfg-minor-direction", "mambo-wrong-norm", "fdg-levels-reversed", "perturbed-from-uncond",
                 "seg-blur-swapped", "apg-mix-phase-flipped"],
                [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/guidance/guiders", "tests/guidance/test_internals.py"]),
    "paths": (["initial-noise-unscaled", "replacement-old-level", "replacement-sigma-for-s"],
              [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/guidance/samplers/test_loop.py",
               "tests/guidance/test_inpaint.py"]),
    "gate": (["cfg-sign-flip", "classifier-gradient-dropped", "clip-wrong-timestep", "gradient-without-sigma"],
             [sys.executable, "-m", "bench.tools.regress"]),
}


def run_mutation(name: str, command: list[str]) -> bool:
    """True when the command fails with the bug planted (the bug is caught)."""
    path, old, new = MUTATIONS[name]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "tree"
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", "reports", "runs", ".devdata", "__pycache__"))
        target = copy / path
        text = target.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"mutation {name}: the original text is not found exactly once in {path}")
        target.write_text(text.replace(old, new))
        result = subprocess.run(command, cwd=copy, capture_output=True, text=True, env=_env(copy))
        return result.returncode != 0


def _env(root: Path) -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(root)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=sorted(SUITES), default="core")
    args = parser.parse_args()
    names, command = SUITES[args.suite]
    caught = 0
    for name in names:
        ok = run_mutation(name, command)
        caught += ok
        print(f"{name:30s} {'caught' if ok else 'MISSED'}", flush=True)
    print(f"{caught}/{len(names)} planted bugs caught by: {' '.join(command[1:])}")
    return 0 if caught == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())

"""guidance: pluggable guidance methods for diffusion models behind one sampler interface.

Not to be confused with the unrelated PyPI package named `guidance` (a prompting library).
"""

from guidance.diffusion import GaussianDiffusion, space_timesteps
from guidance.guiders import Guidance, GuidanceCost, available_guidance, make_guidance
from guidance.protocols import Conditions, Denoiser, NoiseAwareClassifier, NoisedCLIP
from guidance.sampling import NonFiniteSampleError, ddim_step, ddpm_step, sample

__all__ = ["GaussianDiffusion", "space_timesteps", "Guidance", "GuidanceCost", "available_guidance",
           "make_guidance", "Conditions", "Denoiser", "NoiseAwareClassifier", "NoisedCLIP",
           "NonFiniteSampleError", "ddim_step", "ddpm_step", "sample"]
__version__ = "0.1.0"

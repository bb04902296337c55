"""guidance: pluggable guidance methods for diffusion models behind one sampler interface.

Not to be confused with the unrelated PyPI package named `guidance` (a prompting library).
"""

from guidance.denoisers import NetworkDenoiser, as_k_diffusion
from guidance.guiders import Guidance, GuidanceCost, available_guidance, make_guidance
from guidance.prediction import Prediction
from guidance.process import VE, NoiseLevel, Process, RectifiedFlow, VPDiscrete
from guidance.protocols import Conditions, Denoiser, NoiseAwareClassifier, NoisedCLIP
from guidance.samplers import SAMPLERS, NonFiniteSampleError, sample

__all__ = ["Guidance", "GuidanceCost", "available_guidance", "make_guidance", "Conditions", "Denoiser",
           "NoiseAwareClassifier", "NoisedCLIP", "NonFiniteSampleError", "sample", "SAMPLERS", "Prediction",
           "Process", "NoiseLevel", "VPDiscrete", "VE", "RectifiedFlow", "NetworkDenoiser", "as_k_diffusion"]
__version__ = "0.1.0"

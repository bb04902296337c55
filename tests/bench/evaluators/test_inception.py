"""FID on Inception features from a local file: the real loading path (random weights in
torch-fidelity's format: the published ones cannot be downloaded here), and unsafe files refused."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from bench.evaluators.inception import InceptionNet, inception_fid
from guidance.checkpoints import CheckpointError

EXECUTED: list[str] = []


def _mark() -> None:
    EXECUTED.append("unpickled")


class _Payload:
    """A pickle that runs code when loaded: what weights_only=True exists to refuse."""

    def __reduce__(self):
        return (_mark, ())


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    patch = pytest.MonkeyPatch()
    patch.setattr(fe, "load_state_dict_from_url", lambda *args, **kwargs: {})  # no download: keep the random init
    patch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *args, **kwargs: None)
    torch.manual_seed(0)
    state = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
    patch.undo()
    folder = tmp_path_factory.mktemp("inception")
    torch.save(state, folder / "pt_inception.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "pt_inception.safetensors"))
    return folder


def _fid(path, real: torch.Tensor, fake: torch.Tensor) -> float:
    fid = inception_fid(str(path))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    return float(fid.compute())


def test_inception_fid_scores_with_local_weights_in_either_format(random_inception):
    g = torch.Generator().manual_seed(0)
    real, fake = (torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=g) for _ in range(2))
    pth = _fid(random_inception / "pt_inception.pth", real, fake)
    assert math.isfinite(pth) and pth > 0
    assert _fid(random_inception / "pt_inception.safetensors", real, fake) == pytest.approx(pth, rel=1e-6)
    assert abs(_fid(random_inception / "pt_inception.pth", real, real)) < 1e-3 * pth


def test_inception_weights_that_would_run_code_are_refused_unread(tmp_path):
    evil = tmp_path / "inception.pth"
    torch.save({"fc.weight": torch.zeros(1), "payload": _Payload()}, evil)
    with pytest.raises(CheckpointError, match="not a plain tensor state dict"):
        inception_fid(str(evil))
    assert not EXECUTED
    torch.load(evil, weights_only=False)  # what torch-fidelity would have done with the file
    assert EXECUTED == ["unpickled"]


def test_inception_network_features_give_torchmetrics_inception_fid(random_inception):
    """The inception feature network (any image size: torch-fidelity resizes to 299 itself) through the
    bench's Fréchet distance equals torchmetrics' Inception FID on the same images."""
    from bench.evaluators.fid import FrechetDistance
    from bench.evaluators.reference import Reference

    g = torch.Generator().manual_seed(1)
    real, fake = (torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8, generator=g) for _ in range(2))
    net = InceptionNet(str(random_inception / "pt_inception.safetensors"))
    with torch.no_grad():
        ours = FrechetDistance(Reference.of(net(real), chunk=5), net(fake), chunk=5).value()["fid"]
    assert net(fake).shape == (5, 2048)
    assert ours == pytest.approx(_fid(random_inception / "pt_inception.safetensors", real, fake), rel=1e-4)

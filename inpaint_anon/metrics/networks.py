"""The two networks behind the crop metrics, loaded from local files or the torch hub cache, never silently.

- LPIPS (``lpips`` package, v0.1): its calibrated linear layers ship inside the package; the backbone
  (AlexNet / VGG16 / SqueezeNet1.1 ImageNet weights from torchvision) is a download. :func:`load_lpips` builds
  ``lpips.LPIPS(pretrained=True, net=..., pnet_rand=True)`` and loads the backbone's torchvision state dict
  into it, which is what ``lpips.LPIPS(pnet_rand=False)`` does through torchvision, minus the hidden download.
- FID InceptionV3: torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's port of the TensorFlow FID network,
  the same weights as pytorch-fid), given an explicit weights file.

Where the weights come from (:func:`resolve_checkpoint`): the config key (``metrics.lpips_weights`` /
``metrics.fid_weights``) when set; else ``$TORCH_HOME/hub/checkpoints/<file name from the URL>`` (torch's
cache, shared with torchvision, torch-fidelity and torchmetrics); else a download into that cache when
``metrics.download`` is true. Anything else is one :class:`~inpaint_anon.errors.WeightsError` line naming the
metric, the file, the config key and the fix.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inpaint_anon.errors import WeightsError, one_line

LPIPS_BACKBONE_URLS = {
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "squeeze": "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
}
"""torchvision's ImageNet weights of each LPIPS backbone (what ``lpips.LPIPS(pnet_rand=False)`` downloads)."""

FID_INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
"""torch-fidelity's FID InceptionV3 weights (what torchmetrics' FrechetInceptionDistance downloads)."""


def hub_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_checkpoint(url: str, local: str | None, *, metric: str, key: str, download: bool) -> Path:
    """The weights file for ``metric``: ``local`` (the value of config ``key``) when given, else the hub cache
    copy of ``url``, downloaded when missing and ``download`` is true. Raises WeightsError otherwise."""
    filename = url.rsplit("/", 1)[-1]
    if local is not None:
        path = Path(local).expanduser()
        if not path.is_file():
            raise WeightsError(f"{metric}: {key}={local} is not a file; give the path of {filename} "
                               f"(download it from {url})")
        return path
    cache_dir = hub_checkpoint_dir()
    cached = cache_dir / filename
    if cached.is_file():
        return cached
    fix = f"download {url} on a connected machine and set {key}=/path/to/{filename} (or copy it into {cache_dir})"
    if not download:
        raise WeightsError(f"{metric}: weights {filename} are not cached in {cache_dir} and metrics.download=false; "
                           f"{fix}")
    try:
        torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False,
                                           check_hash="download.pytorch.org" in url, weights_only=True)
    except Exception as error:  # noqa: BLE001 - offline: URLError, OSError, RuntimeError (hash), ...
        raise WeightsError(f"{metric}: weights {filename} are not cached in {cache_dir} and the download failed "
                           f"({one_line(error)}); {fix}") from error
    return cached


def _load_state_dict(path: Path, metric: str, key: str) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a damaged or foreign file
        raise WeightsError(f"{metric}: {path} cannot be read as PyTorch weights ({error}); "
                           f"check the file given by {key}") from error
    if not isinstance(state, dict):
        raise WeightsError(f"{metric}: {path} holds a {type(state).__name__}, not a state dict; check {key}")
    return state


def _torchvision_backbone(net: str) -> nn.Module:
    from torchvision import models

    builders = {"alex": models.alexnet, "vgg": models.vgg16, "squeeze": models.squeezenet1_1}
    return builders[net](weights=None)


def load_lpips(net: str = "alex", weights: str | None = None, *, download: bool = True,
               device: torch.device | str = "cpu") -> nn.Module:
    """``lpips.LPIPS`` (v0.1, calibrated linear layers) with ``net``'s ImageNet backbone loaded from
    :func:`resolve_checkpoint` (config key ``metrics.lpips_weights``), in eval mode on ``device``.

    Raises WeightsError when the backbone weights are unavailable or are not a torchvision ``net`` state dict."""
    metric, key = f"LPIPS (net={net})", "metrics.lpips_weights"
    path = resolve_checkpoint(LPIPS_BACKBONE_URLS[net], weights, metric=metric, key=key, download=download)
    state = _load_state_dict(path, metric, key)
    backbone = _torchvision_backbone(net)
    try:
        backbone.load_state_dict(state)
    except RuntimeError as error:
        raise WeightsError(f"{metric}: {path} is not a torchvision {net} state dict ({one_line(error)}); "
                           f"give the file {LPIPS_BACKBONE_URLS[net].rsplit('/', 1)[-1]} in {key}") from error
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation of lpips' pretrained= argument
        model = random_backbone_lpips(net)
    copy_backbone(backbone, model)
    return model.to(device).eval()


def random_backbone_lpips(net: str = "alex") -> nn.Module:
    """``lpips.LPIPS(pretrained=True, net=net, pnet_rand=True)``: calibrated linear layers, random backbone
    (offline; the backbone of tests)."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False).eval()


def copy_backbone(backbone: nn.Module, model: nn.Module) -> None:
    """Copy a torchvision backbone's ``features`` layers into an ``lpips.LPIPS`` model's slices (lpips names
    each sliced layer by its index in ``features``)."""
    features = backbone.features
    for block in model.net.children():
        for name, layer in block.named_children():
            layer.load_state_dict(features[int(name)].state_dict())


class LPIPSScorer:
    """LPIPS distance of crop pairs with a given ``lpips.LPIPS`` model.

    ``scorer(a, b)``: a, b uint8 Tensors (N, 3, S, S) RGB; returns float64 (N,) distances (0 = identical),
    computed on ``device`` without gradients, inputs scaled to [-1, 1] as lpips expects."""

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(f"LPIPS needs two (N, 3, S, S) crop batches of one shape, got {a.shape} and {b.shape}")
        if a.shape[0] == 0:
            return torch.zeros(0, dtype=torch.float64)
        x = a.to(self.device, torch.float32) / 127.5 - 1.0
        y = b.to(self.device, torch.float32) / 127.5 - 1.0
        return self.model(x, y).reshape(-1).double().cpu()


def load_inception(features: int = 2048, weights: str | None = None, *, download: bool = True,
                   device: torch.device | str = "cpu") -> nn.Module:
    """The FID InceptionV3 (torchmetrics ``NoTrainInceptionV3``, ``inception-v3-compat``) returning ``features``
    pool features per uint8 (N, 3, H, W) image (resized to 299 inside), weights from :func:`resolve_checkpoint`
    (config key ``metrics.fid_weights``). Raises WeightsError when unavailable or unreadable."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    metric, key = "FID", "metrics.fid_weights"
    path = resolve_checkpoint(FID_INCEPTION_URL, weights, metric=metric, key=key, download=download)
    try:
        model = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(features)],
                                   feature_extractor_weights_path=str(path))
    except Exception as error:  # noqa: BLE001 - unpickling or state-dict mismatch
        raise WeightsError(f"{metric}: {path} is not the FID InceptionV3 weights ({one_line(error)}); give "
                           f"{FID_INCEPTION_URL.rsplit('/', 1)[-1]} in {key}") from error
    model.num_features = features
    return model.to(device).eval()


class PrecomputedFeatures(nn.Module):
    """Identity "feature extractor" for ``torchmetrics`` FID objects that are fed features computed once
    elsewhere (one Inception pass per crop, shared by the class's FID and the "all" FID).

    num_features: the feature size D; forward takes and returns float (N, D)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class FeatureExtractor:
    """Runs an image feature network (e.g. :func:`load_inception`) on uint8 crops.

    ``extractor(crops)``: uint8 (N, 3, S, S) -> float64 (N, D) on the CPU. ``num_features``: D. ``name``: what
    the features are (part of the cache key of saved FID statistics)."""

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu", name: str = "") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.name = name or type(model).__name__
        num = getattr(model, "num_features", None)
        if num is None:
            with torch.no_grad():
                num = self.model(torch.zeros((1, 3, 299, 299), dtype=torch.uint8, device=self.device)).shape[-1]
        self.num_features = int(num)

    @torch.no_grad()
    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        if crops.shape[0] == 0:
            return torch.zeros((0, self.num_features), dtype=torch.float64)
        features = self.model(crops.to(self.device))
        return features.reshape(crops.shape[0], -1).double().cpu()

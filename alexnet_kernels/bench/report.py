"""The main job's outputs: the rich tables, and JSON, markdown and a PNG chart in a folder.

One summary row per case and direction (forward, forward+backward): what
"ours" (``backend="auto"``) ran, median and interquartile range of each
provider, the speed-ups (baseline median / our median), the byte model (our
native kernels and PyTorch eager; none for whole networks), and on a GPU each
hand-written kernel's achieved bandwidth as a fraction of a device-to-device
copy (the byte model describes them, not whatever "ours" picked).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from alexnet_kernels._timing import iqr, median
from alexnet_kernels.bench.cases import Accuracy, Traffic
from alexnet_kernels.bench.timing import Samples

BASELINES = ("eager", "compile")
# Providers that are one hand-written kernel each (the byte model's subject).
HAND_WRITTEN = ("native", "triton")
DIRECTIONS = {"fwd": "forward_ms", "fwd+bwd": "forward_backward_ms"}


def _bytes_for(traffic: dict[str, int], direction: str) -> int:
    return traffic["forward"] + (traffic["backward"] if direction == "fwd+bwd" else 0)


def summarize(samples: list[Samples], traffic: dict[str, Traffic | None], ours: list[str],
              copy_gbs: float | None, ran: dict[str, dict[str, str]] | None = None
              ) -> list[dict[str, object]]:
    """One row per case and direction (see the module docstring); ``ran`` gives per case
    and direction what "ours" ran."""
    rows = []
    for case, model in traffic.items():
        by_provider = {s.provider: s for s in samples if s.case == case}
        for direction, attribute in DIRECTIONS.items():
            times = {p: getattr(s, attribute) for p, s in by_provider.items()}
            row: dict[str, object] = {
                "case": case, "direction": direction,
                "ours_ran": (ran or {}).get(case, {}).get(direction, "-"),
                "median_ms": {p: median(t) for p, t in times.items()},
                "iqr_ms": {p: iqr(t) for p, t in times.items()},
                "bytes_ours": model and _bytes_for(model.ours, direction),
                "bytes_eager": model and _bytes_for(model.eager, direction),
            }
            ran_ours = [o for o in ours if o in times]
            row["speedup"] = {f"{b}/{o}": row["median_ms"][b] / row["median_ms"][o]
                              for b in BASELINES if b in times for o in ran_ours}
            if copy_gbs is not None and model is not None:
                row["bandwidth_of_copy"] = {
                    o: row["bytes_ours"] / (row["median_ms"][o] * 1e-3) / (copy_gbs * 1e9)
                    for o in ran_ours if o in HAND_WRITTEN}
            rows.append(row)
    return rows


def table_cells(summary: list[dict[str, object]]) -> tuple[list[str], list[list[str]]]:
    """Headers and text cells shared by the terminal table and the markdown file."""
    # A provider that could not run on some case leaves "-" in its cells.
    providers = _union(row["median_ms"] for row in summary)
    ratios = _union(row["speedup"] for row in summary)
    bandwidth = _union(row.get("bandwidth_of_copy", {}) for row in summary)
    headers = ["case", "direction", "ours ran", *(f"{p} ms" for p in providers), *ratios,
               "MB native", "MB eager", *(f"{o} BW/copy" for o in bandwidth)]
    rows = []
    for row in summary:
        median, spread = row["median_ms"], row["iqr_ms"]
        cells = [str(row["case"]), str(row["direction"]), str(row["ours_ran"])]
        cells += [f"{median[p]:#.3g} ±{spread[p]:.2g}" if p in median else "-"
                  for p in providers]
        cells += [f"{row['speedup'][r]:.2f}x" if r in row["speedup"] else "-" for r in ratios]
        cells += ["-" if row[key] is None else f"{row[key] / 1e6:.1f}"
                  for key in ("bytes_ours", "bytes_eager")]
        fractions = row.get("bandwidth_of_copy", {})
        cells += [f"{fractions[o]:.0%}" if o in fractions else "-" for o in bandwidth]
        rows.append(cells)
    return headers, rows


def _union(keys_per_row) -> list[str]:
    """The keys of all rows, baselines first (eager, compile), else in first-seen order."""
    keys = dict.fromkeys(key for row_keys in keys_per_row for key in row_keys)

    def rank(key: str) -> int:
        return next((i for i, b in enumerate(BASELINES) if key.startswith(b)), len(BASELINES))
    return sorted(keys, key=rank)


def render(accuracy: list[Accuracy], summary: list[dict[str, object]], title: str,
           console: Console) -> None:
    table = Table(title="Accuracy against PyTorch's float64 reference "
                        "(output; gradients of the input and the weights)")
    for column in ("case", "provider", "dtype", "out abs", "out rel", "grad abs", "grad rel",
                   "kept", "result"):
        table.add_column(column)
    for a in accuracy:
        table.add_row(a.case, a.provider, a.dtype, f"{a.output_max_abs:.1e}",
                      f"{a.output_max_rel:.1e}", f"{a.grad_max_abs:.1e}",
                      f"{a.grad_max_rel:.1e}",
                      "-" if a.keep_fraction is None else f"{a.keep_fraction:.3f}",
                      "[green]pass[/]" if a.passed else "[red]FAIL[/]")
    console.print(table)
    headers, rows = table_cells(summary)
    table = Table(title=title)
    for header in headers:
        table.add_column(header, justify="left" if header in ("case", "direction", "ours ran")
                         else "right")
    for cells in rows:
        table.add_row(*cells)
    console.print(table)


def _markdown(title: str, summary: list[dict[str, object]], accuracy: list[Accuracy]) -> str:
    headers, rows = table_cells(summary)
    lines = [f"# {title}", "", "| " + " | ".join(headers) + " |",
             "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    failed = [f"{a.case} ({a.provider})" for a in accuracy if not a.passed]
    lines += ["", f"Accuracy: {len(accuracy) - len(failed)}/{len(accuracy)} checks pass"
              + (f"; FAILED: {', '.join(failed)}" if failed else "."), ""]
    return "\n".join(lines)


def _chart(summary: list[dict[str, object]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(DIRECTIONS), figsize=(14, 5), sharey=True)
    for axis, direction in zip(axes, DIRECTIONS, strict=True):
        rows = [r for r in summary if r["direction"] == direction]
        ratios = _union(r["speedup"] for r in rows)
        width = 0.8 / max(len(ratios), 1)
        for i, ratio in enumerate(ratios):
            axis.bar([j + i * width for j in range(len(rows))],
                     [r["speedup"].get(ratio, 0.0) for r in rows], width, label=ratio)
        axis.set_xticks([j + width * (len(ratios) - 1) / 2 for j in range(len(rows))],
                        [str(r["case"]) for r in rows], rotation=30, ha="right", fontsize=8)
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_yscale("log")
        axis.set_title(direction)
        axis.legend()
    axes[0].set_ylabel("speed-up of ours (baseline time / our time)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(out: Path, record: dict[str, object], summary: list[dict[str, object]],
          accuracy: list[Accuracy], title: str) -> list[Path]:
    """Writes results.json, results.md and speedup.png into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "results.md", out / "speedup.png"]
    record = {**record, "accuracy": [dataclasses.asdict(a) for a in accuracy],
              "summary": summary}
    paths[0].write_text(json.dumps(record, indent=2, default=str) + "\n")
    paths[1].write_text(_markdown(title, summary, accuracy))
    _chart(summary, title, paths[2])
    return paths

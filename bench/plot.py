"""Draw a bench result (the dict from :func:`featuremaps.bench.suite.assemble`). Returns figures;
the CLI saves them."""

from __future__ import annotations


def throughput_figure(result: dict):
    """Left: images/s vs batch size per backend, with the fp32 bound. Right: images/s per
    scaling variant (deepest tap, number of outputs, full network) against each one's bound.
    Returns a matplotlib ``Figure``."""
    from matplotlib.figure import Figure

    sc = result.get("scaling") or {}
    rows = [r for r in sc.get("rows", []) if "skipped" not in r]
    fig = Figure(figsize=(12 if rows else 6.5, 4.6), layout="constrained")
    axes = fig.subplots(1, 2 if rows else 1, squeeze=False)[0]
    _draw_batches(axes[0], result)
    if rows:
        _draw_scaling(axes[1], sc["batch"], rows)
    m = result["model"]
    fig.suptitle(f"{m['name']} taps {','.join(t.split('.')[-1] for t in m['taps'])} at {m['input_size']}², "
                 f"{result['environment']['cpu']}", fontsize=10)
    return fig


def _draw_batches(ax, result: dict) -> None:
    by_backend: dict[str, list] = {}
    for r in result["results"]:
        by_backend.setdefault(r["backend"], []).append((r["batch"], r["images_per_s"]))
    for name, pts in sorted(by_backend.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.axhline(result["bound"]["images_per_s"], color="k", ls="--", lw=1,
               label=f"fp32 bound to {result['model']['deepest']}")
    ax.set_xscale("log", base=2)
    sizes = result["config"]["batch_sizes"]
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s (median)")
    ax.set_title("throughput per backend")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _draw_scaling(ax, batch: int, rows: list[dict]) -> None:
    labels = [r["label"] for r in rows]
    xs = range(len(rows))
    colors = {"depth": "tab:blue", "taps": "tab:orange", "full": "tab:gray"}
    ax.bar(xs, [r["images_per_s"] for r in rows], color=[colors.get(r["group"], "tab:green") for r in rows])
    ax.scatter(xs, [r["bound_images_per_s"] for r in rows], marker="_", s=400, color="k", zorder=3,
               label="fp32 bound of that graph")
    ax.set_yscale("log")
    ax.set_xticks(list(xs), labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("images / s (median, log)")
    ax.set_title(f"ort-cpu at batch {batch}: depth (blue), tap outputs (orange), full (grey)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)

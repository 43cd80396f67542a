"""The plots of the sim study (``--png-prefix PREFIX``): ``PREFIX_rm.png`` (the reward
sources' held-out measures against the number of annotated pairs), ``PREFIX_rm_curve.png`` (with ``--rm-curve``:
the token RMs' learning curves) and ``PREFIX_ppo.png`` (gold score per PPO
step and KL). ``a`` is the study's parsed settings (``finealign.pipeline.sim_study.parse_args``)."""

from __future__ import annotations

import statistics


def moving(xs: list[float], w: int = 3) -> list[float]:
    """Trailing moving average: element i is the mean of ``xs[max(0, i - w + 1): i + 1]``."""
    return [statistics.fmean(xs[max(0, i - w + 1): i + 1]) for i in range(len(xs))]


def plot(a, rm: list[dict], runs: list[dict], ppo: dict) -> None:
    """The plots of ``--png-prefix``; ``ppo`` is ``summarize_ppo``'s summary of ``runs`` (for the targets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if rm:
        plot_rm(plt, a, rm)
    if any(r.get("curve") for r in rm):
        plot_rm_curve(plt, a, rm)
    if runs:
        plot_ppo(plt, a, runs, ppo)


RM_PANELS = (("pair_acc", "pairwise accuracy vs gold"),
             ("pair_acc_length_balanced", "length-balanced pairwise accuracy"),
             ("token_auroc", "token AUROC vs gold spans"))


def plot_rm(plt, a, rm: list[dict]) -> None:
    """PREFIX_rm.png: pairwise accuracy (with the shorter-wins baseline), its length-balanced form and token
    AUROC against the number of annotated pairs; mean over seeds with a min..max band."""
    tasks = a.tasks
    fig, axes = plt.subplots(len(RM_PANELS), len(tasks), figsize=(4.5 * len(tasks), 10), squeeze=False)
    for j, task in enumerate(tasks):
        for i, (m, title) in enumerate(RM_PANELS):
            ax, plotted = axes[i][j], False
            for noise in a.noise:
                for c, src in enumerate(a.sources):
                    pts = [r for r in rm if r["task"] == task and r["noise"] == noise and r["source"] == src
                           and r[m] is not None]
                    if pts:
                        x = [r["size"] for r in pts]
                        ax.plot(x, [r[m] for r in pts], marker="o", color=f"C{c}",
                                ls="-" if noise == "zero" else "--", label=f"{src} ({noise})")
                        ax.fill_between(x, *zip(*[r[m + "_range"] for r in pts]), color=f"C{c}", alpha=0.1)
                        plotted = True
            length = [r["length_pair_acc"] for r in rm if r["task"] == task and r["length_pair_acc"] is not None]
            if m == "pair_acc" and length and plotted:
                ax.axhline(1 - length[0], color="black", lw=0.8, ls=":", label="shorter wins")
            ax.set_xscale("log")
            ax.set_xticks(sorted(a.sizes), [str(x) for x in sorted(a.sizes)])
            ax.minorticks_off()
            if plotted:
                ax.legend(fontsize=6)
            else:
                ax.text(0.5, 0.5, "no data (the held-out set has no gold-ordered pairs / wrong tokens)",
                        ha="center", va="center", fontsize=7, transform=ax.transAxes, wrap=True)
            ax.set_title(f"{task}: {title}", fontsize=9)
            ax.set_xlabel("annotated pairs")
            ax.axhline(0.5, color="grey", lw=0.5)
    fig.tight_layout()
    fig.savefig(f"{a.png_prefix}_rm.png", dpi=110)


CURVE_PANELS = (("token_auroc", "token AUROC vs gold spans"),
                ("pair_acc_length_balanced", "length-balanced pairwise accuracy"),
                ("train_loss", "training loss (mean since the last point)"))


def plot_rm_curve(plt, a, rm: list[dict]) -> None:
    """PREFIX_rm_curve.png (``--rm-curve``): token AUROC, length-balanced accuracy and training loss against the
    token RM's optimizer steps, one line per source (mean over seeds), per task and size."""
    rows = [r for r in rm if r.get("curve")]
    cols = sorted({(r["task"], r["noise"], r["size"]) for r in rows})
    fig, axes = plt.subplots(len(CURVE_PANELS), len(cols), figsize=(4.5 * len(cols), 9), squeeze=False)
    for j, (task, noise, size) in enumerate(cols):
        for i, (m, title) in enumerate(CURVE_PANELS):
            ax = axes[i][j]
            for c, src in enumerate(a.sources):
                for r in rows:
                    if (r["task"], r["noise"], r["size"], r["source"]) == (task, noise, size, src):
                        pts = [p for p in r["curve"] if p.get(m) is not None]
                        ax.plot([p["step"] for p in pts], [p[m] for p in pts], marker="o", color=f"C{c}",
                                label=f"{src} ({r['seeds']} seed{'s' if r['seeds'] > 1 else ''})")
            if m != "train_loss":
                ax.axhline(0.5, color="grey", lw=0.5)
            ax.set_title(f"{task} ({noise}, {size} pairs)\n{title}", fontsize=9)
            ax.set_xlabel("reward-model optimizer step")
            if ax.lines:
                ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(f"{a.png_prefix}_rm_curve.png", dpi=110)


def plot_ppo(plt, a, runs: list[dict], summary: dict) -> None:
    """PREFIX_ppo.png: gold score (3-step mean; seed mean and min..max band) and KL per PPO step."""
    from matplotlib.ticker import MaxNLocator

    tasks = a.tasks
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.5 * len(tasks), 6.4), squeeze=False)
    for j, task in enumerate(tasks):
        for i, rew in enumerate(a.ppo_rewards):
            for gran in a.granularities:
                cs = [r["curve"] for r in runs if r["task"] == task and r["reward"] == rew and r["granularity"] == gran]
                cs = [c for c in cs if c]
                if not cs:
                    continue
                n = min(len(c) for c in cs)
                steps = range(1, n + 1)
                style = dict(color=f"C{i}", ls="-" if gran == "token" else "--")
                # 3-step moving average of each seed's gold score; line = mean over seeds, band = min..max
                golds = [moving([c[s]["gold"] for s in range(n)]) for c in cs]
                axes[0][j].plot(steps, [statistics.fmean(col) for col in zip(*golds)],
                                label=f"{rew} {gran} ({len(cs)} seed{'s' if len(cs) > 1 else ''})", **style)
                if len(cs) > 1:
                    axes[0][j].fill_between(steps, [min(col) for col in zip(*golds)], [max(col) for col in zip(*golds)],
                                            color=style["color"], alpha=0.12 if gran == "token" else 0.06)
                axes[1][j].plot(steps, [statistics.fmean(c[s]["kl"] for c in cs) for s in range(n)], **style)
        target = summary.get(task, {}).get("target")
        if target is not None:
            axes[0][j].axhline(target, color="grey", lw=0.7, ls=":", label="target")
        axes[0][j].set_title(f"{task}: gold score of PPO rollouts (3-step mean)", fontsize=9)
        axes[1][j].set_title(f"{task}: KL to the reference (nats / response)", fontsize=9)
        axes[1][j].set_xlabel("PPO step")
        for ax in (axes[0][j], axes[1][j]):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if axes[0][j].lines:
            axes[0][j].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(f"{a.png_prefix}_ppo.png", dpi=110)

"""The 2-D toy of SimVQ §4.2.1 (Figs. 2–3), run with vqkit's own VQ and SimVQ modules.

Why: the paper's argument for a frozen codebook C behind a learned linear layer W is that
gradient descent on ``||x - q||²`` only moves the codes that win the nearest-code search
(the rest stay dead), while ``||x - C·W||²`` with C frozen moves every code through W, and
training C and W together falls back to VQ-like behaviour (Remark 1). Running the toy on the
library's real quantizers checks that our modules reproduce that mechanism, not a re-implementation.

Setup (as the paper): "two target points", one from N((2,2), I) and one from N((-2,-2), I)
(``points_per_cluster`` draws more from each; with 10 each, noise flips assignments and VQ moves
more codes than the paper's two); 10 codes from N(0, I); each step the targets get fresh
N(0, 0.01) noise (read as variance 0.01, i.e. std 0.1).
Every arm starts from the very same 10 points: VQ's codebook is overwritten by the draw, SimVQ's
C is set to it and its linear layer to identity weight and zero bias. Each arm is trained with
plain SGD (no momentum, no weight decay — so a code that never receives a gradient stays exactly
where it was) on the quantizer's own loss with the noisy targets as z.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..plotting import pyplot, save_figure
from ..quantizers import VQ, SimVQ
from ..reporting.cells import md_cell
from ..storage import atomic_write

NUM_CODES = 10
POINTS_PER_CLUSTER = 1  # the paper's two target points
NOISE_STD = 0.1  # N(0, 0.01) of the paper, read as variance 0.01
MOVED_EPS = 1e-3
ARMS = {
    "vq": "VQ: ||x - q||²",
    "simvq_frozen": "SimVQ: C frozen",
    "simvq_both": "SimVQ: C and W trainable",
}
PAPER = {
    "vq": "only the codes nearest to the targets move; the others stay dead (Fig. 2a)",
    "simvq_frozen": "every code moves, because W transforms the whole codebook (Fig. 2b)",
    "simvq_both": "behaves like VQ: the selected codes move, W barely changes (Fig. 3, Remark 1)",
}


def _effective_codes(arm: nn.Module) -> Tensor:
    """(K, 2) code positions the search sees: VQ's codebook, SimVQ's linear(C)."""
    if isinstance(arm, SimVQ):
        return arm.codes().clone()
    assert isinstance(arm, VQ)
    return arm.codebook.detach().clone()


def _make_arm(name: str, init: Tensor) -> nn.Module:
    """One quantizer started at ``init`` (K, 2) so all arms begin from the same points."""
    arm: nn.Module
    with torch.no_grad():
        if name == "vq":
            arm = VQ(2, NUM_CODES)
            arm.codebook.copy_(init)
        else:
            arm = SimVQ(2, NUM_CODES, train_codebook=name == "simvq_both")
            arm.codebook.copy_(init)
            arm.linear.weight.copy_(torch.eye(2))
            arm.linear.bias.zero_()
    return arm


def _train_arm(name: str, init: Tensor, targets: Tensor, steps: int, lr: float, seed: int) -> dict[str, Any]:
    """SGD on the arm's own quantizer loss; returns trajectories (steps+1, K, 2), losses, ‖W‖_F."""
    arm = _make_arm(name, init)
    opt = torch.optim.SGD([p for p in arm.parameters() if p.requires_grad], lr=lr)
    noise_gen = torch.Generator().manual_seed(seed + 1)  # same noise sequence for every arm
    positions = [_effective_codes(arm)]
    losses: list[float] = []
    w_norms: list[float] = []
    if isinstance(arm, SimVQ):
        w_norms.append(float(arm.linear.weight.detach().norm()))
    for _ in range(steps):
        z = targets + NOISE_STD * torch.randn(targets.shape, generator=noise_gen)
        loss = arm(z).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        positions.append(_effective_codes(arm))
        if isinstance(arm, SimVQ):
            w_norms.append(float(arm.linear.weight.detach().norm()))
    return {"positions": torch.stack(positions), "losses": losses, "w_norms": w_norms}


def _plot_trajectories(path: Path, targets: Tensor, runs: dict[str, dict[str, Any]]) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 5), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, (name, run) in zip(axes[0], runs.items(), strict=True):
        ax.scatter(targets[:, 0], targets[:, 1], c="red", marker="X", s=80, zorder=5, label="targets x")
        pos = run["positions"].numpy()
        for k in range(pos.shape[1]):
            c = colors(k % 10)
            ax.plot(pos[:, k, 0], pos[:, k, 1], color=c, lw=1.2)
            ax.scatter(pos[0, k, 0], pos[0, k, 1], color=c, marker="o", s=30, edgecolors="k")
            ax.scatter(pos[-1, k, 0], pos[-1, k, 1], color=c, marker="*", s=90, edgecolors="k")
            ax.annotate(f"q{k + 1}", pos[0, k], fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_title(ARMS[name])
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="upper left", fontsize=8, title="o start, * end", title_fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _plot_dynamics(path: Path, runs: dict[str, dict[str, Any]]) -> None:
    plt = pyplot()

    fig, (ax_w, ax_l) = plt.subplots(1, 2, figsize=(10, 4))
    for name in ("simvq_frozen", "simvq_both"):
        ax_w.plot(runs[name]["w_norms"], label=ARMS[name])
        ax_l.plot(runs[name]["losses"], label=ARMS[name])
    ax_l.plot(runs["vq"]["losses"], label=ARMS["vq"], ls="--", color="gray")
    ax_w.set(title="||W||_F", xlabel="step")
    ax_l.set(title="quantizer loss", xlabel="step", yscale="log")
    for ax in (ax_w, ax_l):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def _agrees(name: str, moved: int) -> bool:
    """The paper's qualitative claim, as a test on the count of moved codes."""
    return moved == NUM_CODES if name == "simvq_frozen" else moved < NUM_CODES


def _w_note(arms: dict[str, Any]) -> str:
    """Fig. 3(b)'s claim in numbers: how much ‖W‖_F changed with C frozen vs with C trainable."""
    frozen = arms["simvq_frozen"]["w_norm_end"] - arms["simvq_frozen"]["w_norm_start"]
    both = arms["simvq_both"]["w_norm_end"] - arms["simvq_both"]["w_norm_start"]
    ratio = f"{both / frozen:.2f}×" if frozen else "n/a"
    return (f"‖W‖_F changed by {frozen:+.3f} with C frozen and by {both:+.3f} with C and W trainable "
            f"({ratio} the frozen arm's change); the paper reports W 'almost unchanged' in the latter.")


def _write_markdown(path: Path, result: dict[str, Any]) -> None:
    lines = [
        "# SimVQ toy example (§4.2.1, Figs. 2–3)",
        "",
        f"{result['steps']} steps of plain SGD (lr {result['lr']}), seed {result['seed']}, "
        f"{result['targets']} targets, {NUM_CODES} codes, target noise std {NOISE_STD}. "
        f"A code counts as moved when its position changed by more than {MOVED_EPS:g}; "
        "'moved > 10%' counts codes that travelled more than a tenth of the farthest code's distance.",
        "",
        "| arm | codes moved | moved > 10% | median / max travel | final loss | ‖W‖_F start → end | paper | agrees |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, arm in result["arms"].items():
        w = f"{arm['w_norm_start']:.3f} → {arm['w_norm_end']:.3f}" if "w_norm_start" in arm else ""
        lines.append(
            f"| {md_cell(ARMS[name])} | {arm['codes_moved']}/{NUM_CODES} | {arm['codes_moved_far']}/{NUM_CODES} | "
            f"{arm['median_over_max_displacement']:.2f} | "
            f"{arm['final_loss']:.4f} | {w} | {PAPER[name]} | {'yes' if arm['agrees_with_paper'] else 'no'} |"
        )
    lines += [
        "",
        "'agrees' tests: SimVQ with C frozen moved all codes; the other two arms moved fewer than all "
        "(by the 10% count for the C-and-W arm, since any change of W nudges every code a little). "
        "'median / max travel' is near 0 when a few selected codes do all the moving (VQ-like) and near 1 "
        "when the whole codebook moves together.",
        "",
        _w_note(result["arms"]),
        "",
        "![trajectories](toy2d_trajectories.png)",
        "",
        "![dynamics](toy2d_dynamics.png)",
        "",
    ]
    atomic_write(path, "\n".join(lines).encode())


def run_toy2d(out_dir: Path, steps: int = 300, seed: int = 0, lr: float = 0.05, *,
              points_per_cluster: int = POINTS_PER_CLUSTER) -> dict[str, Any]:
    """Train the three arms, write plots, ``toy2d.json`` and ``report.md`` into ``out_dir``; return the json dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[2.0, 2.0]] * points_per_cluster + [[-2.0, -2.0]] * points_per_cluster)
    targets = centers + torch.randn(centers.shape, generator=gen)
    init = torch.randn(NUM_CODES, 2, generator=gen)

    runs = {name: _train_arm(name, init, targets, steps, lr, seed) for name in ARMS}
    arms: dict[str, Any] = {}
    for name, run in runs.items():
        pos: Tensor = run["positions"]
        travel = (pos[-1] - pos[0]).norm(dim=-1)
        far = float(travel.max()) * 0.1
        moved = int((travel > MOVED_EPS).sum())
        moved_far = int((travel > max(far, MOVED_EPS)).sum())
        arm: dict[str, Any] = {
            "codes_moved": moved,
            "codes_moved_far": moved_far,
            "displacement": [round(float(t), 6) for t in travel],
            "median_over_max_displacement": float(travel.median() / travel.max()) if float(travel.max()) else 0.0,
            "final_loss": run["losses"][-1] if run["losses"] else float("nan"),
        }
        if run["w_norms"]:
            arm["w_norm_start"] = run["w_norms"][0]
            arm["w_norm_end"] = run["w_norms"][-1]
        arm["agrees_with_paper"] = _agrees(name, moved_far if name == "simvq_both" else moved)
        arms[name] = arm
    result: dict[str, Any] = {"steps": steps, "seed": seed, "lr": lr, "optimizer": "SGD",
                              "targets": int(targets.shape[0]), "arms": arms}

    _plot_trajectories(out_dir / "toy2d_trajectories.png", targets, runs)
    _plot_dynamics(out_dir / "toy2d_dynamics.png", runs)
    atomic_write(out_dir / "toy2d.json", json.dumps(result, indent=2).encode())
    _write_markdown(out_dir / "report.md", result)
    return result


__all__ = ["run_toy2d"]

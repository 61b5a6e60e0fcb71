"""A run's `logs.csv` as PNG figures a person reads at a glance: returns, values, policy, gradients, rewards,
throughput (`run.py --mode=plot --xpid X` writes them to SAVEDIR/XPID/plots).

TensorBoard shows every scalar on its own chart; diagnosing IMPALA means reading a few of them side by side
(log pi against log mu, the value against its V-trace target, each block's gradient norm on one log axis). Each
figure below is one such question, its panels stacked on a shared `frames` axis.

The CSV is the source, not the event files: it is plain text, survives copying, and `RunLogger` guarantees every
row lines up with the header. Blank cells mean "not measured on this row" (the per-loss gradient norms are
measured every K steps, evaluation only now and then), so each series keeps only its own rows with a finite
number. A column that is absent or never has a value draws nothing, and a figure with nothing to draw is not
written: no empty figures.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from beast.cli import fail
from beast.config import Config
from beast.runtime.logs import CSV_NAME, STEP_KEY

PLOTS_DIR = "plots"
X_LABEL = "frames (engine tics)"
REFERENCE_LINE = re.compile(r"\s*([-\d.]+)\s*min\s+(\d+)\s*frames\s+([-\d.]+)")

Series = tuple[list[float], list[float]]  # (frames, values), the rows where this column has a finite number
Selection = list[tuple[str, Series]]  # (legend label, series) of one panel


class PlotError(ValueError):
    """The CSV cannot be plotted (no `frames` column); `main` turns it into a one-line error."""


@dataclass(frozen=True)
class Curves:
    """The columns matching `pattern` (a full-match regex), each labelled `label.format(**named groups)`."""

    pattern: str
    label: str


@dataclass(frozen=True)
class Panel:
    title: str
    ylabel: str
    curves: tuple[Curves, ...]
    log_y: bool = False
    unit_interval: bool = False  # a rate in [0, 1]: fixed limits so 0.9 and 0.1 do not look alike


@dataclass(frozen=True)
class FigureSpec:
    name: str  # the PNG's stem
    title: str
    panels: tuple[Panel, ...]


def _c(pattern: str, label: str | None = None) -> Curves:
    return Curves(pattern, pattern if label is None else label)


# Evaluation columns are `eval/<policy>/<statistic>`, policy greedy or sample; any other policy name is drawn too.
_EVAL = r"eval/(?P<policy>[^/]+)/"
# A multi-task run's per-task columns are `<task>/<statistic>` (docs/multitask.md).
_TASK = r"(?P<task>(?!eval$|reward$|grad_norm$|grad_norm_loss$|popart_mu$|popart_sigma$)[^/]+)/"

FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec(
        "returns",
        "Episode returns",
        (
            Panel(
                "Mean episode return (training: last 100 episodes)",
                "return",
                (_c("mean_return", "training"), _c(_EVAL + "mean_return", "evaluation ({policy})")),
            ),
            Panel(
                "Mean episode length",
                "agent steps",
                (_c("mean_length", "training"), _c(_EVAL + "mean_length", "evaluation ({policy})")),
            ),
            Panel(
                "Success rate",
                "fraction of episodes",
                (_c("success_rate", "training"), _c(_EVAL + "reached_goal_rate", "evaluation ({policy})")),
                unit_interval=True,
            ),
        ),
    ),
    FigureSpec(
        "tasks",
        "Tasks of a multi-task run",
        (
            Panel(
                "Score: (return - random) / (reference - random), 1 = the single-task expert",
                "score",
                (
                    _c(_TASK + "score", "{task}"),
                    _c("suite_score", "suite (training)"),
                    _c(_EVAL + "suite_score", "suite (evaluation, {policy})"),
                ),
            ),
            Panel("Each task's return (training: last 100 episodes)", "return", (_c(_TASK + "mean_return", "{task}"),)),
            Panel(
                "Each task's greedy evaluation",
                "return",
                (_c(r"eval/(?P<task>[^/]+)/greedy/mean_return", "{task}"),),
            ),
        ),
    ),
    FigureSpec(
        "values",
        "Critic",
        (
            Panel(
                "Value vs V-trace target",
                "value",
                (_c("values_mean", "V(x) mean"), _c("vs_mean", "v_s target mean")),
            ),
            Panel("Explained variance of the targets by the values", "explained variance", (_c("explained_variance"),)),
            Panel(
                "PopArt normalisation",
                "statistic",
                (
                    _c("popart_mu", "mu"),
                    _c("popart_sigma", "sigma"),
                    _c(r"popart_sigma/(?P<task>\d+)", "sigma of task {task}"),
                ),
            ),
        ),
    ),
    FigureSpec(
        "policy",
        "Policy",
        (
            Panel("Policy entropy", "entropy (nats)", (_c("entropy"),)),
            Panel(
                "Mean log pi vs log mu (learner vs actors, taken actions)",
                "log probability",
                (_c("log_pi_mean", "log pi (learner)"), _c("log_mu_mean", "log mu (actors)")),
            ),
            Panel(
                "Policy lag",
                "learner updates",
                (_c("policy_lag_mean", "mean"), _c("policy_lag_max", "max")),
            ),
        ),
    ),
    FigureSpec(
        "gradients",
        "Gradient norms",
        (
            Panel(
                "Gradient norm per block",
                "L2 norm",
                (_c(r"grad_norm/(?P<block>(?!total$)[^/]+)", "{block}"),),
                log_y=True,
            ),
            Panel("Total gradient norm (before clipping)", "L2 norm", (_c("grad_norm/total", "total"),), log_y=True),
            Panel(
                "Gradient norm of each loss alone (measured every K steps)",
                "L2 norm",
                (_c(r"grad_norm_loss/(?P<loss>[^/]+)", "{loss}"),),
                log_y=True,
            ),
        ),
    ),
    FigureSpec(
        "rewards",
        "Reward terms (what the agent is paid for)",
        (Panel("Reward terms", "reward", (_c(r"reward/(?P<term>.+)", "{term}"),)),),
    ),
    FigureSpec(
        "throughput",
        "Throughput",
        (
            Panel(
                "Frames per second",
                "frames/s",
                (_c("env_fps", "envs"), _c("inference_fps", "inference"), _c("learner_fps", "learner")),
            ),
        ),
    ),
)


# --- reading ---------------------------------------------------------------------------------------------------
def read_logs(path: Path) -> dict[str, Series]:
    """Every column of `path` (a logs.csv) as (frames, values) over the rows where both cells are finite numbers,
    in file order; a column with no such row is left out. Raises PlotError when there is no `frames` column."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        if STEP_KEY not in columns:
            raise PlotError(f"{path} has no '{STEP_KEY}' column")
        series: dict[str, Series] = {key: ([], []) for key in columns if key != STEP_KEY}
        for row in reader:
            x = _finite(row.get(STEP_KEY))
            if x is None:
                continue
            for key, (xs, ys) in series.items():
                y = _finite(row.get(key))
                if y is not None:
                    xs.append(x)
                    ys.append(y)
    return {key: s for key, s in series.items() if s[0]}


def _finite(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# --- drawing ---------------------------------------------------------------------------------------------------
def _select(panel: Panel, data: Mapping[str, Series]) -> Selection:
    """(label, series) for every column matching the panel's curves, in the CSV's column order per curve."""
    out: Selection = []
    for curves in panel.curves:
        regex = re.compile(curves.pattern)
        for key, series in data.items():
            match = regex.fullmatch(key)
            if match is not None:
                out.append((curves.label.format(**match.groupdict()), series))
    return out


def _draw_panel(ax: Axes, panel: Panel, selected: Selection) -> None:
    for label, (xs, ys) in selected:
        if panel.log_y:
            # A log axis cannot show 0 (a loss that reaches no parameter has norm 0): leave those points out and
            # say so in the legend, rather than letting matplotlib clip them silently.
            kept = [(x, y) for x, y in zip(xs, ys, strict=True) if y > 0]
            if len(kept) < len(xs):
                label = f"{label} ({len(xs) - len(kept)} values <= 0 not shown)"
            xs, ys = [x for x, _ in kept], [y for _, y in kept]
        # Sparse series (per-loss norms, evaluations) get markers: a lone point is invisible as a line.
        marker = "o" if len(xs) < 60 else None
        ax.plot(xs, ys, label=label, marker=marker, markersize=3, linewidth=1.2)
    ax.set_title(panel.title, fontsize=11)
    ax.set_ylabel(panel.ylabel)
    if panel.log_y:
        ax.set_yscale("log")
    if panel.unit_interval:
        ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    if len(selected) > 1:
        ax.legend(fontsize=8, loc="best")


def _render(spec: FigureSpec, panels: Sequence[tuple[Panel, Selection]], run_name: str, path: Path) -> None:
    fig = Figure(figsize=(10, 0.6 + 3.0 * len(panels)), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas: no display, and no pyplot state shared with the caller
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (panel, selected) in zip(axes, panels, strict=True):
        _draw_panel(ax, panel, selected)
    axes[-1].set_xlabel(X_LABEL)
    axes[-1].xaxis.set_major_formatter(EngFormatter())
    fig.suptitle(f"{run_name}: {spec.title}", fontsize=13)
    fig.savefig(path, dpi=100)


def read_reference(path: Path) -> tuple[list[float], list[float]]:
    """(wall minutes, return) from a reference curve file: lines `M min F frames R`, `#` comments (the layout of
    the Sample Factory curve in the project's shared references). Raises PlotError when no line matches."""
    minutes: list[float] = []
    returns: list[float] = []
    for line in Path(path).read_text().splitlines():
        match = REFERENCE_LINE.match(line)
        if match is not None:
            minutes.append(float(match.group(1)))
            returns.append(float(match.group(3)))
    if not minutes:
        raise PlotError(f"{path} has no lines of the form 'M min F frames R'")
    return minutes, returns


def plot_wall_time(run_dir: Path, reference: Path, out_dir: Path) -> Path:
    """`wall_time.png`: the run's training and evaluation returns against wall minutes since its first log row,
    beside a reference curve (what "above it at every equal wall time" is judged on)."""
    with open(Path(run_dir) / CSV_NAME, newline="") as f:
        rows = list(csv.DictReader(f))
    start = min(t for r in rows if (t := _finite(r.get("time"))) is not None)
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for column, label in (
        ("mean_return", "training mean return (last 100 episodes)"),
        ("eval/greedy/mean_return", "evaluation, greedy"),
        ("eval/sample/mean_return", "evaluation, sampled"),
    ):
        points = [(t, y) for r in rows if (t := _finite(r.get("time"))) is not None and (y := _finite(r.get(column)))]
        if points:
            ax.plot(
                [(t - start) / 60 for t, _ in points],
                [y for _, y in points],
                label=f"{Path(run_dir).name}: {label}",
                marker="o" if len(points) < 60 else None,
                markersize=3,
            )
    minutes, returns = read_reference(reference)
    ax.plot(minutes, returns, label=f"reference: {Path(reference).stem}", color="black", linestyle="--")
    ax.set_xlabel("wall time (minutes)")
    ax.set_ylabel("scenario return")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{Path(run_dir).name}: return against wall time", fontsize=13)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "wall_time.png"
    fig.savefig(path, dpi=100)
    return path


COMPARED = (("mean_return", "training mean return"), ("entropy", "policy entropy (nats)"), ("doom_skill", "doom skill"))


def plot_compare(run_dirs: Sequence[Path], out_dir: Path) -> Path:
    """`compare.png`: several runs' training return, entropy and skill against frames, one line per run (what
    an ablation is read from). A panel none of the runs has a value for is left out."""
    data = {Path(d).name: read_logs(Path(d) / CSV_NAME) for d in run_dirs}
    # A panel only where some run has values that vary (a skill that never changed says nothing).
    panels = [
        (column, label)
        for column, label in COMPARED
        if any(column in series and len(set(series[column][1])) > 1 for series in data.values())
    ]
    fig = Figure(figsize=(10, 0.6 + 3.0 * len(panels)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (column, label) in zip(axes, panels, strict=True):
        for i, (name, series) in enumerate(data.items()):
            if column in series:
                ax.plot(*series[column], label=name, linewidth=1.2, color=f"C{i % 10}")  # one colour per run
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    axes[-1].set_xlabel(X_LABEL)
    axes[-1].xaxis.set_major_formatter(EngFormatter())
    fig.suptitle("runs compared", fontsize=13)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "compare.png"
    fig.savefig(path, dpi=100)
    return path


# --- entry points ----------------------------------------------------------------------------------------------
def plot_run(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Write one PNG per figure of FIGURES that has data, from `run_dir/logs.csv` into `out_dir` (default
    `run_dir/plots`); returns the paths written, in FIGURES order. A stale PNG of a figure that now has no data is
    left as it is (nothing is deleted). Raises PlotError when the CSV has no `frames` column."""
    run_dir = Path(run_dir)
    out_dir = run_dir / PLOTS_DIR if out_dir is None else Path(out_dir)
    data = read_logs(run_dir / CSV_NAME)
    written: list[Path] = []
    for spec in FIGURES:
        panels = [(panel, selected) for panel in spec.panels if (selected := _select(panel, data))]
        if not panels:
            continue  # no empty figures
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{spec.name}.png"
        _render(spec, panels, run_dir.name, path)
        written.append(path)
    return written


def main(cfg: Config) -> int:
    """`run.py --mode=plot --xpid X`: plot SAVEDIR/XPID/logs.csv into SAVEDIR/XPID/plots, print the PNG paths.
    `--xpid A,B,...` draws the runs side by side instead, into SAVEDIR/plots/compare.png."""
    if not cfg.xpid:
        fail("--mode=plot needs the run to plot: pass --xpid X (a folder under --savedir)")
    if "," in cfg.xpid:
        runs = [Path(cfg.savedir).expanduser() / x.strip() for x in cfg.xpid.split(",") if x.strip()]
        missing = [str(r) for r in runs if not (r / CSV_NAME).is_file()]
        if missing:
            fail(f"no {CSV_NAME} in {', '.join(missing)}: check --xpid and --savedir")
        try:
            print(plot_compare(runs, Path(cfg.savedir).expanduser() / PLOTS_DIR))
        except PlotError as err:
            fail(str(err))
        return 0
    run_dir = Path(cfg.savedir).expanduser() / cfg.xpid
    if not (run_dir / CSV_NAME).is_file():
        fail(f"no {CSV_NAME} in {run_dir}: check --xpid and --savedir (the run writes it at its first log line)")
    try:
        paths = plot_run(run_dir)
    except PlotError as err:
        fail(f"{err}: is it a logs.csv written by run.py --mode=train?")
    if cfg.plot_reference:
        try:
            paths.append(plot_wall_time(run_dir, Path(cfg.plot_reference).expanduser(), run_dir / PLOTS_DIR))
        except (OSError, PlotError) as err:
            fail(f"--plot-reference={cfg.plot_reference}: {err}")
    if not paths:
        fail(f"{run_dir / CSV_NAME} has no values to plot yet: wait for the run's first log line with statistics")
    for path in paths:
        print(path)
    return 0

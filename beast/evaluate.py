"""`run.py --mode=test`: play a checkpoint's policy (greedy, or sampled: `--eval-policy`) for N episodes, report
them, optionally record a labelled GIF.

What is evaluated is the checkpoint's agent in the world it was trained in: the model is built from the
checkpoint's own config (so no model flag has to be repeated, or can contradict it), and so are the env settings
the policy depends on (frame skip, resolution, enemy classes, the skill, and the reward mode, scale, clipping,
discount, health potential and shaping weights, since the model reads the previous step's training reward). The
skill is the run's `--doom-skill`, so a curriculum run is tested at the scenario's own skill, not where its
curriculum stopped. The flags decide the rest: --device, --mamba-backend, --seed, --episodes, --eval-policy,
--record-gif, --json and the env server binary. The scenario is the checkpoint's unless --scenario names another
one than the default (`Config.scenario`), which is how a policy is tried on a related scenario with the same
buttons. `--eval-policy random` plays uniform random actions instead, with no checkpoint: the reference a trained
agent is compared with, on the game the flags (and the scenario's spec) describe.

Per episode (docs/usage.md, "eval.json"): `return` is the scenario's own reward sum (`episode_return` from the
server, whatever --reward-mode trained the agent), `length` is in agent steps, `kills` is KILLCOUNT at the end,
and `reached_goal` means the episode ended on its own: not by the scenario's timeout, not by an engine crash, and
with HEALTH > 0 at the end (alive). For deadly_corridor that is reaching the vest, for basic killing the monster.

A multi-task checkpoint (`beast.envs.tasks`: its config's scenario lists several) is tested on every one of its
tasks, each on an env server of its own with that task's settings (`task_config`), or on those `--scenario`
names among them. The model reads each task's id and plays the communal action space, built from the servers'
buttons as in training, and its actions reach each server as that task's native buttons. eval.json then holds
one entry per task with its score against the task's references, and the suite score (docs/usage.md, "eval.json
of a multi-task checkpoint").
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from beast import gif
from beast.cli import fail
from beast.config import Config
from beast.device import resolve_device, set_intra_op_threads
from beast.envs import EnvClient, EnvServer, EnvServerError, EnvServerStartError, EnvServerTimeoutError
from beast.envs.scenarios import ScenarioError
from beast.envs.shaping import RewardShaper
from beast.envs.tasks import (
    ActionSpace,
    is_multitask,
    suite_score,
    task_config,
    task_label,
    task_names,
    task_score,
)
from beast.model import build_model
from beast.runtime.acting import OBS_KEYS, model_inputs, reached_goal, transition
from beast.runtime.checkpoint import MODEL_FIELDS, CheckpointError, latest_checkpoint, load_checkpoint

EVAL_NAME = "eval.json"
GIF_NAME = "episode.gif"
TASK_GIF_NAME = "episode_{}.gif"  # a multi-task checkpoint's GIF of each task, by `task_label`
ENGINE_FPS = 35.0  # Doom's tic rate
# Settings taken from the checkpoint rather than the flags: what the policy's weights and inputs depend on.
ENV_FIELDS_FROM_CHECKPOINT = (
    "frame_skip",
    "screen_resolution",
    "enemy_classes",
    "reward_mode",
    "reward_scale",
    "reward_clipping",
    "discounting",
    "doom_skill",
    "health_potential_coef",  # terms of the training reward the model reads
    "health_gain_reward",
    *(f.name for f in dataclasses.fields(Config) if f.name.startswith("shaping_")),
)


def evaluate_policy(
    model: nn.Module,
    client: EnvClient,
    episodes: int,
    *,
    cfg: Config,
    device: torch.device | str = "cpu",
    frames_out: list[np.ndarray] | None = None,
    max_steps: int | None = None,
    on_episode: Callable[[dict[str, Any]], None] | None = None,
    stop: threading.Event | None = None,
    task: int = 0,
    actions: ActionSpace | None = None,
) -> list[dict[str, Any]]:
    """Play `episodes` episodes with `model` as it is (call `.eval()` first for the greedy policy) on all envs of
    `client`, each env carrying its own recurrent state, zeroed at episode ends by the model itself.

    Episodes are shared out among the envs in advance (env i plays its quota of them), so short episodes are not
    over-represented the way "the first N to finish" would make them. `cfg` gives the reward the model reads as
    input (the reward mode and shaping weights it was trained with). `frames_out`, when given, receives the
    labelled GIF frames (`beast.gif.frame`: panels, step, action, running scenario return) of env 0's first
    episode. `max_steps` bounds the steps of the whole evaluation for scenarios
    without a timeout; `stop`, when set, ends the evaluation after the step in flight. Returns one dict per
    episode, ordered by env and then by time (see the module docstring).

    `actions`, a multi-task run's action space, makes `client` task `task`'s server: the model reads that task's
    id (it masks the buttons the task lacks) and its communal actions are sent as the task's native buttons.
    Without it, or for one task, the model's actions are the server's own.
    """
    info = client.info
    K = info.num_envs
    quota = [episodes // K + (1 if i < episodes % K else 0) for i in range(K)]
    columns = {name: i for i, name in enumerate(info.var_names)}
    shaper = RewardShaper(info.var_names, cfg, K)
    all_envs = np.arange(K)
    mapped = actions if actions is not None and actions.available.shape[0] > 1 else None  # several tasks' space
    task_ids = np.full(K, task, np.int64)
    action_names = info.action_names if actions is None else actions.names

    device = torch.device(device)
    obs = client.reset()
    done, _, reward = transition(shaper, all_envs, obs, reset=True)
    last_action = np.zeros(K, np.int64)
    training_return = np.zeros(K, np.float64)
    state = model.initial_state(K, device)  # type: ignore[operator]
    played: list[list[dict[str, Any]]] = [[] for _ in range(K)]
    recording = frames_out is not None
    running_return = 0.0  # env 0's scenario return so far, for the GIF
    steps = 0
    while any(len(played[i]) < quota[i] for i in range(K)):
        if (max_steps is not None and steps >= max_steps) or (stop is not None and stop.is_set()):
            break
        inputs = model_inputs(
            {key: np.array(obs[key]) for key in OBS_KEYS},
            done,
            reward,
            last_action,
            device,
            None if mapped is None else task_ids,
        )
        with torch.no_grad():
            outputs, state = model(inputs, state)
        action = outputs["action"][0].to("cpu", torch.int64).numpy()
        if recording:
            frames_out.append(  # type: ignore[union-attr]
                gif.frame(
                    obs["rgb"][0],
                    obs["depth"][0],
                    obs["enemy"][0],
                    step=steps,
                    action=action_names[int(action[0])],
                    running_return=running_return,
                )
            )

        native = action if mapped is None else mapped.to_native(task_ids, action)
        obs = client.step(native.astype(np.int32))
        steps += 1
        done, _, reward = transition(shaper, all_envs, obs)
        training_return += reward
        last_action = action
        running_return += float(obs["reward"][0])
        for i in np.flatnonzero(done):
            if len(played[i]) < quota[i]:
                episode = _episode_record(obs, int(i), columns, float(training_return[i]))
                played[i].append(episode)
                if on_episode is not None:
                    on_episode(episode)
            training_return[i] = 0.0
        if recording and done[0]:
            recording = False
    results = [episode for per_env in played for episode in per_env]
    for n, episode in enumerate(results):
        episode["episode"] = n
    return results


def _episode_record(
    obs: dict[str, np.ndarray], i: int, columns: dict[str, int], training_return: float
) -> dict[str, Any]:
    final = obs["final_vars"][i]
    truncated, crashed = obs["truncated"][i : i + 1], obs["crashed"][i : i + 1]
    goal = None if "HEALTH" not in columns else bool(reached_goal(truncated, crashed, final[[columns["HEALTH"]]])[0])
    return {
        "episode": -1,
        "env": int(i),
        "return": float(obs["episode_return"][i]),
        "length": int(obs["episode_length"][i]),
        "kills": int(final[columns["KILLCOUNT"]]) if "KILLCOUNT" in columns else None,
        "reached_goal": goal,
        "truncated": bool(truncated[0]),
        "crashed": bool(crashed[0]),
        "training_return": training_return,
    }


def summarize(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the episodes (None where a figure is missing in all of them)."""

    def mean(key: str) -> float | None:
        values = [float(e[key]) for e in episodes if e.get(key) is not None]
        return sum(values) / len(values) if values else None

    returns = [e["return"] for e in episodes]
    m = mean("return")
    std = math.sqrt(sum((r - m) ** 2 for r in returns) / len(returns)) if returns and m is not None else None
    return {
        "episodes": len(episodes),
        "mean_return": m,
        "std_return": std,
        "mean_length": mean("length"),
        "mean_kills": mean("kills"),
        "reached_goal_rate": mean("reached_goal"),
    }


def find_checkpoint(cfg: Config) -> Path:
    """--checkpoint PATH, else the latest checkpoint of SAVEDIR/XPID; exits 2 saying what to pass if neither."""
    if cfg.checkpoint:
        path = Path(cfg.checkpoint).expanduser()
        if not path.is_file():
            fail(f"--checkpoint={cfg.checkpoint}: no such file; pass the path of a checkpoint.pt a training run wrote.")
        return path
    if not cfg.xpid:
        fail("--mode=test needs a checkpoint: pass --checkpoint PATH, or --xpid XPID of a run in --savedir.")
    run = Path(cfg.savedir).expanduser() / cfg.xpid
    found = latest_checkpoint(run)
    if found is None:
        fail(f"no checkpoint in {run}; check --savedir and --xpid, or pass --checkpoint PATH.")
    return found


def eval_config(cfg: Config, saved: dict[str, Any]) -> Config:
    """The checkpoint's config with the flags' runtime settings (see the module docstring for which is which). A
    multi-task checkpoint keeps its own task list, which its model's task ids index (`tested_tasks` picks the ones
    to play); a single-task one is refused several scenarios at once (exits 2)."""
    trained = Config.from_dict(saved)
    if is_multitask(trained):
        scenario = trained.scenario
    elif is_multitask(cfg):
        fail(
            f"--scenario={cfg.scenario!r} names several scenarios, but the checkpoint was trained on "
            f"{trained.scenario!r} alone; pass one --scenario."
        )
    else:
        scenario = cfg.scenario if cfg.scenario != Config().scenario else trained.scenario
    from_flags = {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(Config)
        if f.name not in ENV_FIELDS_FROM_CHECKPOINT and not _is_model_field(f.name)
    }
    return dataclasses.replace(trained, **{**from_flags, "scenario": scenario})


def tested_tasks(cfg: Config, run_cfg: Config) -> list[int]:
    """The tasks of `run_cfg` to play: all of them, or, for a multi-task checkpoint, those a --scenario other than
    the default names among its tasks; exits 2 naming its tasks when --scenario names another."""
    names = task_names(run_cfg.scenario)
    if not is_multitask(run_cfg) or cfg.scenario in (Config().scenario, run_cfg.scenario):
        return list(range(len(names)))
    wanted = task_names(cfg.scenario)
    outside = [name for name in wanted if name not in names]
    if outside:
        fail(
            f"--scenario={cfg.scenario!r}: {', '.join(outside)} is not a task of this multi-task checkpoint; "
            f"pass one of {', '.join(names)}, or no --scenario to test them all."
        )
    return [names.index(name) for name in wanted]


def _is_model_field(name: str) -> bool:
    return name in MODEL_FIELDS or name == "logit_lower_bound"  # the bound changes the policy's logits


class UniformRandomAgent(nn.Module):
    """Uniform random actions with the model's interface: the baseline of `--eval-policy random`."""

    def __init__(self, num_actions: int) -> None:
        super().__init__()
        self.num_actions = num_actions

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
        return ()

    def forward(
        self, inputs: dict[str, torch.Tensor], state: tuple[torch.Tensor, ...]
    ) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
        T, B = inputs["done"].shape
        return {"action": torch.randint(self.num_actions, (T, B), device=inputs["done"].device)}, state


def main(cfg: Config) -> int:
    random_policy = cfg.eval_policy == "random"
    if random_policy:
        path, ckpt, run_cfg = None, None, cfg
    else:
        path = find_checkpoint(cfg)
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as err:
            fail(str(err))
        run_cfg = eval_config(cfg, ckpt["config"])
    names = task_names(run_cfg.scenario)
    multitask = len(names) > 1
    tested = tested_tasks(cfg, run_cfg)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    set_intra_op_threads(cfg.num_threads, device)

    task_cfgs = [dataclasses.replace(task_config(run_cfg, t), envs_per_server=1) for t in range(len(names))]
    played: dict[int, tuple[list[dict[str, Any]], list[np.ndarray] | None]] = {}
    try:
        actions: ActionSpace | None = None
        model: nn.Module | None = None
        if multitask and ckpt is not None:
            actions = ActionSpace.for_tasks(_task_buttons(task_cfgs), names)
            model = _agent(actions, ckpt, run_cfg, path, device)
        for t in tested:
            frames: list[np.ndarray] | None = [] if cfg.record_gif else None
            with EnvServer.from_config(task_cfgs[t], index=0) as server, EnvClient(server.address) as client:
                if ckpt is None:
                    # Uniform over the task's own buttons, which is uniform over its available communal actions.
                    agent: nn.Module = UniformRandomAgent(client.info.num_actions)
                else:
                    if model is None:  # one task: its actions are this server's buttons
                        actions = ActionSpace.for_tasks([client.info.action_names], names)
                        model = _agent(actions, ckpt, run_cfg, path, device)
                    agent = model
                episodes = evaluate_policy(
                    agent,
                    client,
                    cfg.episodes,
                    cfg=task_cfgs[t],
                    device=device,
                    frames_out=frames,
                    on_episode=_progress(cfg, names[t] if multitask else None),
                    task=t,
                    actions=actions,
                )
            played[t] = (episodes, frames)
    except (EnvServerStartError, ScenarioError, EnvServerError, EnvServerTimeoutError) as err:
        fail(str(err))

    out_dir = path.parent if path is not None else (Path(cfg.savedir).expanduser() / cfg.xpid if cfg.xpid else None)
    results: dict[str, dict[str, Any]] = {}
    for t, (episodes, frames) in played.items():
        gif_path = None
        if frames and out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            gif_path = out_dir / (TASK_GIF_NAME.format(task_label(names[t])) if multitask else GIF_NAME)
            gif.write_gif(gif_path, frames, fps=ENGINE_FPS / task_cfgs[t].frame_skip)
        summary = summarize(episodes)
        result: dict[str, Any] = {"summary": summary, "episodes": episodes}
        if multitask:
            result["score"] = task_score(names[t], summary["mean_return"])
        results[names[t]] = {**result, "gif": None if gif_path is None else str(gif_path)}
    report: dict[str, Any] = {
        "checkpoint": None if path is None else str(path),
        "counters": {} if ckpt is None else ckpt["counters"],
        "scenario": ",".join(results) if multitask else run_cfg.scenario,
        "seed": cfg.seed,
        "policy": cfg.eval_policy,
        "device": str(device),
    }
    if multitask:
        report["tasks"] = results
        report["suite_score"] = suite_score({name: r["summary"]["mean_return"] for name, r in results.items()})
    else:
        (only,) = results.values()
        report.update(only)  # summary, episodes, gif: the layout single-task eval.json has always had
    eval_path = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        eval_path = out_dir / EVAL_NAME
        eval_path.write_text(json.dumps(report, indent=2) + "\n")
    if cfg.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report, eval_path)
    return 0


def _task_buttons(task_cfgs: list[Config]) -> list[list[str]]:
    """Each task's buttons, asked of a server started for the question: the model needs every task's before it
    plays any, and a server kept waiting while the others play would time out (--envserver-idle-timeout-s)."""
    buttons = []
    for task_cfg in task_cfgs:
        with EnvServer.from_config(task_cfg, index=0) as server, EnvClient(server.address) as client:
            buttons.append(client.info.action_names)
    return buttons


def _agent(
    actions: ActionSpace, ckpt: dict[str, Any], run_cfg: Config, path: Path | None, device: torch.device
) -> nn.Module:
    """The checkpoint's model with its weights on `device`, sampling (`--eval-policy sample`) or greedy."""
    if actions.num_actions != ckpt["num_actions"]:
        fail(
            f"the checkpoint's policy has {ckpt['num_actions']} actions but scenario {run_cfg.scenario!r} "
            f"has {actions.num_actions}; pass --scenario of the scenario it was trained on "
            f"({Config.from_dict(ckpt['config']).scenario})."
        )
    model = build_model(run_cfg, ckpt["num_actions"], actions.available)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        fail(f"{path}: its weights do not fit the model its config describes ({str(err).splitlines()[0]}).")
    return model.to(device).train(run_cfg.eval_policy == "sample")  # train(): the model samples, eval(): argmax


def _progress(cfg: Config, task: str | None) -> Callable[[dict[str, Any]], None] | None:
    """One line per finished episode on stderr when a person is watching (long scenarios take minutes); `task`
    names the task of a multi-task checkpoint."""
    if cfg.json or not sys.stderr.isatty():
        return None
    count = iter(range(1, cfg.episodes + 1))
    prefix = "" if task is None else f"{task}: "
    return lambda e: print(
        f"{prefix}episode {next(count)}/{cfg.episodes}: return {e['return']:.2f}, length {e['length']}",
        file=sys.stderr,
    )


def _print_report(report: dict[str, Any], eval_path: Path | None) -> None:
    """One table of episodes per task, and for a multi-task checkpoint a line of the tasks' and the suite's score."""
    from rich.console import Console

    counters = report["counters"]
    frames = counters.get("frames", "?")
    source = report["checkpoint"] or "uniform random actions"
    console = Console()
    tasks = report.get("tasks") or {report["scenario"]: report}
    for name, task in tasks.items():
        console.print(_episode_table(f"{name} · {source} · {frames} frames · seed {report['seed']}", task))
    gifs = [task["gif"] for task in tasks.values() if task["gif"]]
    if "tasks" in report:
        scores = ", ".join(f"{name} {_cell(task['score'], '.3f')}" for name, task in tasks.items())
        console.print(f"score: {scores}; suite score {_cell(report['suite_score'], '.3f')}", highlight=False)
    if eval_path is not None:
        console.print(f"wrote {eval_path}" + (f" and {', '.join(gifs)}" if gifs else ""), highlight=False)


def _cell(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec)


def _episode_table(title: str, task: dict[str, Any]) -> Any:
    """A task's episodes and their means (`task`: its "episodes" and "summary")."""
    from rich.table import Table

    table = Table(title=title)
    for name in ("episode", "return", "length", "kills", "reached goal"):
        table.add_column(name, justify="right")
    for e in task["episodes"]:
        table.add_row(
            str(e["episode"]), _cell(e["return"], ".2f"), str(e["length"]), _cell(e["kills"]), _cell(e["reached_goal"])
        )
    s = task["summary"]
    table.add_section()
    table.add_row(
        "mean",
        f"{_cell(s['mean_return'], '.2f')} ± {_cell(s['std_return'], '.2f')}",
        _cell(s["mean_length"], ".1f"),
        _cell(s["mean_kills"], ".2f"),
        "-" if s["reached_goal_rate"] is None else f"{100 * s['reached_goal_rate']:.0f}%",
    )
    return table

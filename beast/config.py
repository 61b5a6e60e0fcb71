"""Every setting of beast, in one place.

`Config` is the single source of truth: each field carries its type, default and help text; the command line is
derived from it (`beast.cli`), the checkpoint stores it, and no other module defines a default. Validation lives
here too, so an inconsistent combination is rejected before any process or thread starts.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
from dataclasses import dataclass, field
from typing import Any

# The file in SAVEDIR/XPID holding a run's settings: written when a run starts, read back by `--resume`.
CONFIG_NAME = "config.json"


class ConfigError(ValueError):
    """A setting is missing, out of range or inconsistent; the message names the flag and the fix."""


def setting(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field whose help text (and allowed values) the CLI reads."""
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = choices
    return field(default=default, metadata=metadata)


def flag_name(field_name: str) -> str:
    """The command-line spelling of a field: `envs_per_server` -> `--envs-per-server`."""
    return "--" + field_name.replace("_", "-")


_SECTION_BANNER = re.compile(r"^\s*# --- (\w[\w ]*\w) -+$")
_FIELD_LINE = re.compile(r"^    (\w+): ")


def config_sections() -> dict[str, list[str]]:
    """The fields of `Config` under each of its `# --- name ---` banners, in order: `--help` groups its flags by
    them, so the class's own layout is the one place a setting's section is written."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    names = {f.name for f in dataclasses.fields(Config)}
    for line in inspect.getsource(Config).splitlines():
        banner, field_line = _SECTION_BANNER.match(line), _FIELD_LINE.match(line)
        if banner:
            current = sections.setdefault(banner.group(1), [])
        elif field_line and field_line.group(1) in names:
            if current is None:
                raise ConfigError(f"Config.{field_line.group(1)} comes before the first section banner.")
            current.append(field_line.group(1))
    return sections


@dataclass
class Config:
    # --- run -------------------------------------------------------------------------------------------------
    mode: str = setting(
        "train",
        "What to do: train a policy, test a checkpoint, bench the parts, plot a run's logs.csv as PNGs, or serve "
        "games to a trainer on another host.",
        choices=("train", "test", "bench", "plot", "serve"),
    )
    xpid: str = setting("", "Experiment id; logs and checkpoints go to SAVEDIR/XPID. Empty: a timestamped id.")
    savedir: str = setting("runs", "Root folder for experiments (logs, checkpoints, config, evaluation).")
    device: str = setting("auto", "Torch device for the model: auto (cuda if available, else cpu), cpu, cuda, cuda:N.")
    seed: int = setting(0, "Base seed for torch and the env servers (env i of server s gets a distinct seed).")
    json: bool = setting(False, "Print machine-readable JSON instead of tables (test and bench modes).")

    # --- environment -----------------------------------------------------------------------------------------
    scenario: str = setting(
        "deadly_corridor",
        "A built-in ViZDoom scenario name (basic, deadly_corridor, ...) or the path of a .cfg file; several, "
        "comma-separated, train one agent on all of them (docs/multitask.md).",
    )
    frame_skip: int = setting(4, "Engine tics per agent step (frames = steps x frame skip).")
    doom_skill: int = setting(0, "Difficulty 1 (easiest) to 5 (hardest); 0 keeps the scenario .cfg's own doom_skill.")
    screen_resolution: str = setting(
        "RES_160X120", "ViZDoom render resolution; observations are area-averaged from it to 64x64."
    )
    enemy_classes: str = setting(
        "Zombieman,ShotgunGuy,ChaingunGuy,WolfensteinSS,DoomImp,Demon,Spectre,LostSoul,Cacodemon,HellKnight,"
        "BaronOfHell,Arachnotron,PainElemental,Revenant,Fatso,Archvile,Cyberdemon,SpiderMastermind,MarineChainsawVzd",
        "Comma-separated actor class names whose live instances count as enemies in the enemy mask.",
    )
    envserver_binary: str = setting("envserver/build/beast-envserver", "Path of the C++ env server binary.")
    envserver_idle_timeout_s: float = setting(
        30.0, "An env server exits after this many seconds without a message from its client."
    )
    envserver_hang_timeout_s: float = setting(
        60.0,
        "A server with steps out and no result for this many seconds is taken as dead and restarted (a remote "
        "server that was restarted under its address looks like this: its new games know nothing of our steps).",
    )
    envserver_startup_timeout_s: float = setting(
        180.0, "A local env server that has not started its games after this many seconds has failed to start."
    )
    num_servers: int = setting(
        1,
        "Local env server processes the trainer starts and supervises (per task in a multi-task run); 0: none, "
        "only the --env-servers.",
    )
    envs_per_server: int = setting(8, "ViZDoom games hosted by each local env server.")
    env_servers: str = setting(
        "", "Comma-separated addresses (tcp://host:port) of remote env servers to use besides the local ones."
    )
    curve_server_key: str = setting(
        "", "File holding the Z85 public CURVE key of remote env servers (required for tcp:// addresses off loopback)."
    )
    curve_client_key: str = setting(
        "",
        "File holding this trainer's own CURVE keypair, created (with FILE.pub) if missing; remote env servers serve "
        "only the public keys in their allow-list (--mode=serve: CURVE_DIR/allowed_clients). Empty: a throwaway "
        "key, which such a server refuses.",
    )

    # --- reward ----------------------------------------------------------------------------------------------
    reward_mode: str = setting(
        "scenario",
        "scenario: the scenario's own reward; shaped: the write-up's r + alpha*(gamma*Phi(s') - Phi(s)) from "
        "game-variable deltas, plus the scenario's reward on the step that ends an episode (beast/envs/shaping.py).",
        choices=("shaped", "scenario"),
    )
    shaping_distance_coef: float = setting(
        0.5, "Weight of new ground covered (growth of the farthest distance from the start, in zones) in r."
    )
    shaping_hits_taken_coef: float = setting(-3.0, "Weight of each hit taken in r.")
    shaping_hits_coef: float = setting(10.0, "Weight of each hit dealt in r.")
    shaping_kills_coef: float = setting(1.0, "Weight of each kill in r.")
    shaping_alpha: float = setting(1.0, "Weight alpha of the potential term alpha*(gamma*Phi(s') - Phi(s)).")
    shaping_zone_scale: float = setting(100.0, "Zone scale z: map units that count as one unit of progress/travel.")
    shaping_damage_coef: float = setting(
        -0.01, "Weight of damage taken in Phi (the write-up's D term; negative penalises being hurt)."
    )
    shaping_terminal_coef: float = setting(
        0.1, "Weight of the scenario's own reward on the step that ends an episode (e.g. the vest, death)."
    )
    health_potential_coef: float = setting(
        0.0,
        "With --reward-mode=scenario: add w*(gamma*HEALTH(s') - HEALTH(s)) to the scenario's reward (0: off). "
        "A potential term: it pays a medkit and charges a hit at once without changing which policy is optimal.",
    )
    health_gain_reward: float = setting(
        0.0,
        "With --reward-mode=scenario: add this much (scenario units) on each step whose HEALTH rose (0: off). "
        "Sample Factory's gathering shaping (Wu & Tian 2017): a medkit pays at once, whatever health is left.",
    )

    # --- model -----------------------------------------------------------------------------------------------
    core: str = setting(
        "mamba", "Recurrent core: mamba (Mamba2/SSD), lstm, or none (feed-forward).", choices=("mamba", "lstm", "none")
    )
    mamba_backend: str = setting(
        "auto",
        "Mamba scan implementation: auto (cuda kernels when available), "
        "cuda (mamba-ssm Triton kernels; fail if missing), torch (reference path).",
        choices=("auto", "cuda", "torch"),
    )
    d_model: int = setting(256, "Width of the core's input/output features.")
    d_state: int = setting(64, "Mamba2 SSM state size N per head.")
    d_conv: int = setting(4, "Mamba2 causal depthwise convolution width.")
    expand: int = setting(2, "Mamba2 inner expansion factor (d_inner = expand * d_model).")
    headdim: int = setting(64, "Mamba2 head dimension P (d_inner must be a multiple).")
    mamba_chunk_size: int = setting(64, "Chunk length of the chunked SSD scan.")
    action_embed_dim: int = setting(64, "Width of the last-action embedding.")
    head_hidden: int = setting(256, "Hidden width of the policy and critic MLP heads.")
    normalize_input: bool = setting(
        False,
        "Normalise each RGB-D pixel by its running mean and std over the frames trained on, clipped to +-5 "
        "(Sample Factory's Doom default; the learner updates the statistics, checkpoints keep them).",
    )

    # --- learner ---------------------------------------------------------------------------------------------
    total_frames: int = setting(10_000_000, "Training budget in frames (engine tics = steps x frame skip).")
    unroll_length: int = setting(32, "T: agent steps per rollout; buffers hold T+1 steps, overlapping by one.")
    batch_size: int = setting(32, "B: rollouts per learner step.")
    precision: str = setting(
        "auto",
        "Arithmetic of the learner's forward and backward, and of the compiled acting forward: bf16 (autocast) or "
        "fp32; auto: bf16 on a CPU that computes it natively (AVX512-BF16 or AMX), fp32 elsewhere (on a GPU not yet "
        "measured). The scan, norms, heads, weights and losses stay fp32; eager acting is fp32 (at a few envs per "
        "call bf16 autocast does not pay there).",
        choices=("auto", "fp32", "bf16"),
    )
    discounting: float = setting(0.99, "Discount factor gamma.")
    reward_clipping: str = setting(
        "none", "Clipping of the scaled reward (training and model input).", choices=("abs_one", "none")
    )
    reward_scale: float = setting(
        1.0,
        "Multiply rewards by this before clipping. With PopArt the values are normalised anyway; the scale sets the "
        "size of the reward the model reads as input (clamped to [-1, 1]), so one step's reward should be O(0.1).",
    )
    popart: bool = setting(
        True, "PopArt: normalised value targets with an output-preserving critic (van Hasselt et al. 2016)."
    )
    popart_beta: float = setting(
        0.005, "PopArt statistics step size per learner step (1/n until it falls below this: a running average first)."
    )
    vtrace_lambda: float = setting(
        0.95, "lambda of V-trace's traces c_s = lambda * min(1, pi/mu) (1 is the paper's default; < 1 cuts variance)."
    )
    normalize_advantages: bool = setting(
        False,
        "Centre the policy-gradient advantages and scale them to unit std over each batch (Sample Factory's and "
        "PPO's default), on top of PopArt's division by sigma.",
    )
    baseline_cost: float = setting(0.5, "Weight of the baseline loss 0.5*sum((vs - V)^2).")
    entropy_cost: float = setting(0.01, "Weight of the exploration loss (--exploration-loss).")
    exploration_loss: str = setting(
        "symmetric_kl",
        "The third loss: entropy (the paper's bonus, cost * sum pi log pi) or symmetric_kl (cost * sum of "
        "KL(pi||u) + KL(u||pi) to the uniform policy u, whose pull does not fade as the policy turns deterministic).",
        choices=("entropy", "symmetric_kl"),
    )
    clip_rho_threshold: float = setting(1.0, "V-trace rho-bar: truncation of importance weights in the targets.")
    clip_pg_rho_threshold: float = setting(1.0, "Truncation of importance weights in the policy-gradient advantage.")
    optimizer: str = setting("adam", "Optimiser.", choices=("rmsprop", "adam"))
    learning_rate: float = setting(1e-4, "Initial learning rate; decays linearly to zero over total_frames.")
    lr_warmup_frames: int = setting(
        0, "Raise the learning rate linearly from near 0 to --learning-rate over the first N frames (0 disables)."
    )
    rmsprop_alpha: float = setting(0.99, "RMSProp smoothing constant.")
    rmsprop_eps: float = setting(0.01, "RMSProp epsilon.")
    rmsprop_momentum: float = setting(0.0, "RMSProp momentum.")
    adam_beta1: float = setting(0.9, "Adam beta1.")
    adam_beta2: float = setting(0.999, "Adam beta2.")
    adam_eps: float = setting(1e-8, "Adam epsilon.")
    grad_norm_clipping: float = setting(40.0, "Clip gradients to this global norm (0 disables).")
    critic_warmup_frames: int = setting(
        0, "Freeze the actor (no policy-gradient/entropy loss, actor-only parameters unchanged) for the first N frames."
    )
    warmup_logit_noise: float = setting(
        0.0, "Std of Gaussian noise added to logits before sampling during critic warm-up (0 disables)."
    )
    logit_lower_bound: float = setting(0.0, "Clamp policy logits from below at this value; 0 disables (use e.g. -10).")
    loss_grad_norm_interval: int = setting(
        100,
        "Every K learner steps, measure the gradient norm each loss alone "
        "contributes to the shared parameters (0 disables).",
    )

    # --- runtime ---------------------------------------------------------------------------------------------
    max_inference_batch: int = setting(32, "Largest batch of envs the dynamic batcher runs through the model at once.")
    compile_acting: bool = setting(
        True,
        "On the CPU, run the batcher's acting forward through torch.compile: ~2x faster at its batch sizes, +21% "
        'training frames/s, compiled at the start (20-60 s; docs/benchmarks.md, "Compiled acting"). On CUDA it '
        "stays eager (not measured there).",
    )
    max_inference_wait_ms: float = setting(
        2.0, "How long the batcher waits for more envs to become ready before running a partial batch."
    )
    num_buffers: int = setting(
        0, "Preallocated rollout buffers; 0 picks max(2 x batch size, envs + batch size) so actors rarely wait."
    )
    num_threads: int = setting(
        0,
        "Torch intra-op threads for inference and learning; 0: auto (on the CPU half the cores, at least one; "
        "torch's default on a GPU or where OMP_NUM_THREADS is set, as torchrun does).",
    )
    checkpoint_interval_min: float = setting(10.0, "Minutes between checkpoints (one is always written at the end).")
    log_interval_s: float = setting(5.0, "Seconds between progress lines and log rows.")
    resume: bool = setting(False, "Continue SAVEDIR/XPID from its latest checkpoint, counters included.")
    eval_interval_frames: int = setting(
        1_000_000,
        "During training, evaluate the latest weights every N frames on envs of their own (0 disables); the best "
        "greedy mean return is kept as checkpoint_best.pt.",
    )
    curriculum_threshold: float = setting(
        0.0,
        "Automatic curriculum (0 disables): start at --doom-skill (1 if 0) and raise the skill by one whenever an "
        "evaluation's greedy success rate reaches this fraction, up to 5.",
    )
    eval_episodes: int = setting(10, "Episodes per policy (greedy and sampled) of each evaluation during training.")
    eval_envs: int = setting(5, "Games of the evaluation env server during training (episodes are shared out).")
    distributed_timeout_s: float = setting(
        300.0,
        "Synchronous learners (torchrun): how long a rank waits for the others at a collective before the job fails.",
    )

    # --- test and plot ---------------------------------------------------------------------------------------
    checkpoint: str = setting("", "Checkpoint file for --mode=test; empty: the latest in SAVEDIR/XPID.")
    episodes: int = setting(10, "Episodes to play in --mode=test.")
    eval_policy: str = setting(
        "greedy",
        "How --mode=test acts: greedy (argmax) or sample (from the policy); random: uniform random actions, the "
        "reference a trained agent is compared with (no checkpoint; the flags and the scenario's spec set the game).",
        choices=("greedy", "sample", "random"),
    )
    record_gif: bool = setting(False, "In --mode=test, write a GIF of the first episode (RGB | depth | enemy mask).")
    plot_reference: str = setting(
        "",
        "With --mode=plot: a reference curve file (lines 'M min F frames R', e.g. Sample Factory's) to draw against "
        "wall time beside the run's returns (wall_time.png).",
    )

    # --- serve -----------------------------------------------------------------------------------------------
    listen: str = setting(
        "",
        "With --mode=serve: the address to serve games on, e.g. tcp://0.0.0.0:5555 (off loopback it serves with "
        "CURVE, keys in --curve-dir).",
    )
    curve_dir: str = setting(
        "curve",
        "With --mode=serve: the folder of the server's CURVE keypair (server.key, and server.pub for the trainers' "
        "--curve-server-key; created if missing) and of its allow-list allowed_clients (the trainers' public keys, "
        "one per line).",
    )

    # --- bench -----------------------------------------------------------------------------------------------
    bench_seconds: float = setting(10.0, "Measurement time of each benchmark row.")
    bench_envs: str = setting("4,8", "Comma-separated game counts K for the env benchmark.")

    def validate(self) -> None:
        """Raise ConfigError for values no run could use, naming the flag and what would work."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices is not None and value not in choices:
                raise ConfigError(f"{flag_name(f.name)}={value!r} is not one of {', '.join(choices)}.")
        positive = (
            "frame_skip",
            "envserver_startup_timeout_s",
            "envserver_hang_timeout_s",
            "envs_per_server",
            "d_model",
            "d_state",
            "d_conv",
            "expand",
            "headdim",
            "mamba_chunk_size",
            "action_embed_dim",
            "head_hidden",
            "total_frames",
            "unroll_length",
            "batch_size",
            "max_inference_batch",
            "episodes",
            "eval_episodes",
            "eval_envs",
            "checkpoint_interval_min",
            "log_interval_s",
            "distributed_timeout_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{flag_name(name)} must be positive, got {getattr(self, name)}.")
        non_negative = (
            "grad_norm_clipping",
            "critic_warmup_frames",
            "lr_warmup_frames",
            "warmup_logit_noise",
            "loss_grad_norm_interval",
            "entropy_cost",
            "health_potential_coef",
            "health_gain_reward",
            "baseline_cost",
            "envserver_idle_timeout_s",
            "num_buffers",
            "num_threads",
            "max_inference_wait_ms",
            "eval_interval_frames",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"{flag_name(name)} must be >= 0, got {getattr(self, name)}.")
        if self.num_servers < 0 or (self.num_servers == 0 and not self.remote_server_list()):
            raise ConfigError(
                f"--num-servers must be positive, got {self.num_servers} (0, no local servers, only with "
                "--env-servers listing remote ones)."
            )
        if not 0.0 <= self.discounting <= 1.0:
            raise ConfigError(f"--discounting must lie in [0, 1], got {self.discounting}.")
        if self.reward_scale <= 0:
            raise ConfigError(f"--reward-scale must be positive, got {self.reward_scale}.")
        if not 0 <= self.doom_skill <= 5:
            raise ConfigError(f"--doom-skill must lie in 1..5 (or 0: the scenario's own), got {self.doom_skill}.")
        if not 0.0 <= self.curriculum_threshold <= 1.0:
            raise ConfigError(
                f"--curriculum-threshold must lie in (0, 1] (0 disables it), got {self.curriculum_threshold}."
            )
        if self.curriculum_threshold > 0 and self.eval_interval_frames == 0:
            raise ConfigError("--curriculum-threshold needs evaluations: set --eval-interval-frames above 0.")
        if not 0.0 < self.popart_beta <= 1.0:
            raise ConfigError(f"--popart-beta must lie in (0, 1], got {self.popart_beta}.")
        if not 0.0 < self.vtrace_lambda <= 1.0:
            raise ConfigError(f"--vtrace-lambda must lie in (0, 1], got {self.vtrace_lambda}.")
        if self.learning_rate <= 0:
            raise ConfigError(f"--learning-rate must be positive, got {self.learning_rate}.")
        if self.logit_lower_bound > 0:
            raise ConfigError(f"--logit-lower-bound must be <= 0 (0 disables), got {self.logit_lower_bound}.")
        if 0 < self.num_buffers < self.num_envs() + self.batch_size:
            # Each env holds the buffer it is filling; the learner needs batch_size full ones besides.
            raise ConfigError(
                f"--num-buffers={self.num_buffers} is too few for {self.num_envs()} envs and --batch-size "
                f"{self.batch_size}: use at least {self.num_envs() + self.batch_size}, or 0 to choose automatically."
            )
        if self.shaping_zone_scale <= 0:
            raise ConfigError(f"--shaping-zone-scale must be positive, got {self.shaping_zone_scale}.")
        if (self.expand * self.d_model) % self.headdim != 0:
            raise ConfigError(
                f"--expand x --d-model ({self.expand * self.d_model}) must be a multiple of --headdim "
                f"({self.headdim}); pick --headdim dividing it."
            )
        from beast.envs.curve import is_loopback_or_local  # here: beast.envs imports this module

        elsewhere = [address for address in self.remote_server_list() if not is_loopback_or_local(address)]
        if elsewhere and not (self.curve_server_key and self.curve_client_key):
            raise ConfigError(
                f"--env-servers {elsewhere[0]} is on another host: pass --curve-server-key FILE (its server.pub) and "
                "--curve-client-key FILE (this trainer's keypair, created if missing; FILE.pub goes into the "
                "server's allowed_clients)."
            )
        from beast.envs.tasks import check_tasks, task_names  # here: beast.envs imports this module

        for name in task_names(self.scenario):
            if name.endswith(".cfg") and not os.path.isfile(name):
                raise ConfigError(
                    f"--scenario={name!r}: no such .cfg file; give an existing path or a "
                    "built-in scenario name such as basic or deadly_corridor."
                )
        check_tasks(self)
        try:
            counts = self.bench_env_counts()
        except ValueError:
            counts = []
        if not counts or any(k <= 0 for k in counts):
            raise ConfigError(f"--bench-envs={self.bench_envs!r} must be comma-separated positive integers, e.g. 4,8.")

    def num_envs(self) -> int:
        """Envs on local servers (`num_servers` per task); remote servers report their own count when the trainer
        connects."""
        from beast.envs.tasks import task_names

        return len(task_names(self.scenario)) * self.num_servers * self.envs_per_server

    def buffer_count(self) -> int:
        """Rollout buffers to preallocate: enough that every env fills one while the learner holds a batch."""
        if self.num_buffers > 0:
            return self.num_buffers
        return max(2 * self.batch_size, self.num_envs() + self.batch_size)

    def enemy_class_list(self) -> list[str]:
        return [name.strip() for name in self.enemy_classes.split(",") if name.strip()]

    def remote_server_list(self) -> list[str]:
        return [addr.strip() for addr in self.env_servers.split(",") if addr.strip()]

    def bench_env_counts(self) -> list[int]:
        return [int(k) for k in self.bench_envs.split(",") if k.strip()]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """Rebuild a config from a checkpoint or JSON, ignoring keys a newer or older version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

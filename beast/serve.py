"""`run.py --mode=serve --listen tcp://HOST:PORT`: games for a trainer on another host.

Starts one env server (`--scenario`, `--envs-per-server` games, the flags' env settings) on `--listen` and keeps it
up until Ctrl-C: a server that exits (a crash) is started again, and the trainer reconnects to it by itself. It
never idles out, since a remote trainer may come and go.

Off loopback it serves only with CURVE (the "ironhouse" pattern). `--curve-dir` holds:
- the server's keypair, `server.key` (mode 0600) and `server.pub` (created when missing): give `server.pub` to
  each trainer as `--curve-server-key`;
- the allow-list `allowed_clients`: the public keys of the trainers it serves, one per line. A trainer's key file
  (`--curve-client-key FILE`, created when missing) has its public half in `FILE.pub`, which may be appended as it
  is. Any other client is refused, and the server logs its key.

No torch is imported here: an env host needs the env server and its Python launcher only (README, "Env hosts").
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from beast.cli import fail
from beast.config import Config
from beast.envs.curve import allow_list_keys, is_loopback_or_local, read_curve_keypair, write_curve_keypair
from beast.envs.scenarios import ScenarioError
from beast.envs.server import EnvServer, EnvServerStartError
from beast.signals import stop_on_signals

SERVER_KEY, SERVER_PUBLIC, ALLOWED_CLIENTS = "server.key", "server.pub", "allowed_clients"
POLL_S = 0.5


def curve_files(curve_dir: Path) -> tuple[Path, Path, list[str]]:
    """(secret key file, allow-list file, the keys on it); the keypair and an empty allow-list are created when
    missing. Exits 2 when the allow-list names no trainer yet, saying how to add one."""
    curve_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret, public, allowed = curve_dir / SERVER_KEY, curve_dir / SERVER_PUBLIC, curve_dir / ALLOWED_CLIENTS
    if not secret.exists():
        write_curve_keypair(secret, public)
        print(f"beast serve: created the server's CURVE keypair {secret}", file=sys.stderr)
    elif not public.exists():
        public.write_text(f'# beast CURVE public key (Z85)\npublic-key = "{read_curve_keypair(secret)[0]}"\n')
    if not allowed.exists():
        allowed.write_text("# public keys of the trainers this server serves, one per line (a trainer's FILE.pub)\n")
    try:
        keys = allow_list_keys(allowed.read_text())
    except ValueError as err:
        fail(f"{allowed}: {err}; fix or delete that line.")
    if not keys:
        fail(
            f"{allowed} lists no trainer yet: append each trainer's public key (its --curve-client-key FILE.pub, "
            "created by its first run) and start again."
        )
    return secret, allowed, keys


def main(cfg: Config) -> int:
    if not cfg.listen:
        fail("--mode=serve needs --listen ADDRESS, e.g. tcp://0.0.0.0:5555 (or tcp://127.0.0.1:PORT for this host).")
    curve: dict[str, Path] = {}
    if not is_loopback_or_local(cfg.listen):
        secret, allowed, keys = curve_files(Path(cfg.curve_dir).expanduser())
        curve = {"curve_secret_key_file": secret, "curve_allowed_clients_file": allowed}
        print(
            f"beast serve: CURVE on; trainers pass --curve-server-key {secret.with_name(SERVER_PUBLIC)}; "
            f"{len(keys)} trainer key(s) allowed ({allowed})",
            file=sys.stderr,
        )
    stop = threading.Event()
    starts = 0
    with stop_on_signals(stop):
        while not stop.is_set():
            server = EnvServer(
                scenario=cfg.scenario,
                num_envs=cfg.envs_per_server,
                seed=cfg.seed + starts * cfg.envs_per_server,  # a restarted server plays fresh seeds
                frame_skip=cfg.frame_skip,
                doom_skill=cfg.doom_skill,
                screen_resolution=cfg.screen_resolution,
                enemy_classes=cfg.enemy_class_list(),
                binary=cfg.envserver_binary,
                idle_timeout_s=0.0,
                startup_timeout_s=cfg.envserver_startup_timeout_s,
                address=cfg.listen,
                **curve,
            )
            try:
                server.start()
            except (EnvServerStartError, ScenarioError) as err:
                fail(str(err))
            starts += 1
            print(f"beast serve: serving {cfg.scenario} x {cfg.envs_per_server} on {cfg.listen}", file=sys.stderr)
            try:
                while not stop.is_set() and server.alive():
                    stop.wait(POLL_S)
                if not stop.is_set():
                    print(
                        f"beast serve: the server exited ({server.returncode}); starting it again. Its last words:\n"
                        f"{server.stderr_tail(5)}",
                        file=sys.stderr,
                    )
            finally:
                server.stop()
    print("beast serve: stopped", file=sys.stderr)
    return 0

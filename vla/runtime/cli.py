"""`vla serve`: run a policy on this machine (usually the one with the GPU) for `RemotePolicy` clients on the robot.

    vla serve --policy outputs/train/checkpoints/last/pretrained_model --device cuda --host 0.0.0.0 --token-file key
    vla serve --policy scripted                  # a deterministic stand-in (SO-101 joints, camera front 96x96)

`vla.cli` adds these subcommands with `add_parsers(sub)` and dispatches `COMMANDS` to `run(args)`;
`python -m vla.runtime.cli serve ...` does the same on its own. Checkpoints load through
`vla.runtime.checkpoint.load_checkpoint_policy`, imported only when one is served, so serving the scripted policy
(and this module) needs no torch.
"""

from __future__ import annotations

import argparse
import logging
import stat
from pathlib import Path

from vla.cli_args import PORT, POSITIVE, POSITIVE_INT, number, size_wxh
from vla.hardware.arms import JOINTS as SO101_JOINTS
from vla.runtime.messages import DEFAULT_MAX_FRAME
from vla.runtime.policy import ChunkPolicy, PolicySpec, ScriptedPolicy, add_inference_args
from vla.runtime.server import DEFAULT_PORT, PolicyServer
from vla.signals import sigterm_as_interrupt

COMMANDS = ("serve",)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve a policy over TCP to RemotePolicy clients (the robot computer needs no GPU)",
        description="Serve a policy to RemotePolicy(url, token) clients. Listens on 127.0.0.1 unless --host says "
        "otherwise; on any other address use a token. Traffic is not encrypted: across an untrusted network, "
        "tunnel it (ssh -L 8765:127.0.0.1:8765 gpu-host) instead of exposing the port.",
    )  # fmt: skip
    p.add_argument("--policy", required=True, help="checkpoint directory (pretrained_model) or 'scripted'")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=PORT, default=DEFAULT_PORT, help="TCP port (0: any free port)")
    token = p.add_mutually_exclusive_group()
    token.add_argument("--token-file", type=Path, help="file holding the secret clients must present")
    token.add_argument("--token", help="the secret itself (visible to other users in the process list)")
    p.add_argument("--device", default="cpu", help="torch device for a checkpoint (cpu, cuda, cuda:1)")
    add_inference_args(p)
    p.add_argument("--max-frame-mib", type=number(float, low=0.0625), default=DEFAULT_MAX_FRAME / 2**20,
                   help="largest request accepted (MiB); clients learn it at connect")  # fmt: skip
    p.add_argument("--idle-timeout", type=POSITIVE, default=300.0, help="drop clients silent for this long (s)")
    p.add_argument("--first-request-timeout", type=POSITIVE, default=10.0,
                   help="drop a client that said hello but asks nothing for this long (s), so none hoards a slot")
    p.add_argument("--max-clients", type=POSITIVE_INT, default=8)
    p.add_argument("--max-per-host", type=POSITIVE_INT, default=None,
                   help="slots one machine may hold (default: --max-clients minus one, so one host cannot take all)")
    s = p.add_argument_group("scripted policy (--policy scripted)")
    s.add_argument("--joints", default=",".join(SO101_JOINTS), help="comma-separated joints (<joint>.pos)")
    s.add_argument("--camera", action="append", metavar="NAME:WxH", help="camera (repeatable; default front:96x96)")
    s.add_argument("--chunk-size", type=POSITIVE_INT, default=50)
    s.add_argument("--fps", type=POSITIVE, default=30.0)
    s.add_argument("--latency", type=number(float, low=0), default=0.0, help="seconds each chunk takes")


def run(args: argparse.Namespace) -> None:
    if args.command == "serve":
        serve(args)


def serve(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = read_token(args.token_file) if args.token_file else args.token
    policy = load_policy(args)
    server = PolicyServer(policy, args.host, args.port, token, max_frame=int(args.max_frame_mib * 2**20),
                          idle_timeout=args.idle_timeout, first_request_timeout=args.first_request_timeout,
                          max_clients=args.max_clients, max_per_host=args.max_per_host)  # fmt: skip
    try:
        with sigterm_as_interrupt():  # before the URL is printed: a supervisor may stop us as soon as it reads it
            server.start()
            print(f"serving {args.policy} on {server.url} ({'token required' if token else 'no token'}); "
                  "Ctrl-C to stop", flush=True)  # fmt: skip
            server.serve_forever()
    except KeyboardInterrupt:
        pass
    except OSError as err:  # the port is taken, the address is not ours ...
        raise SystemExit(str(err)) from None
    finally:
        server.close()


def load_policy(args: argparse.Namespace) -> ChunkPolicy:
    if args.policy == "scripted":
        return ScriptedPolicy(scripted_spec(args), latency=args.latency)
    path = Path(args.policy)
    if not path.is_dir():
        raise SystemExit(f"--policy {path}: no such checkpoint directory; pass a pretrained_model directory or "
                         "'scripted'")  # fmt: skip
    from vla.runtime.checkpoint import load_checkpoint_policy  # imports torch: only when serving a checkpoint

    policy: ChunkPolicy = load_checkpoint_policy(path, args.device, dtype=args.dtype, compile=args.compile)
    return policy


def scripted_spec(args: argparse.Namespace) -> PolicySpec:
    names = tuple(f"{j.strip()}.pos" for j in args.joints.split(",") if j.strip())
    if not names:
        raise SystemExit("--joints: give at least one joint name")
    if args.chunk_size < 1 or args.fps <= 0:
        raise SystemExit(f"--chunk-size must be >= 1 and --fps > 0, got {args.chunk_size} and {args.fps}")
    cameras = dict(parse_camera(c) for c in (args.camera or ["front:96x96"]))
    return PolicySpec(chunk_size=args.chunk_size, action_names=names, state_names=names, cameras=cameras,
                      fps=args.fps)  # fmt: skip


def parse_camera(text: str) -> tuple[str, tuple[int, int]]:
    name, _, size = text.partition(":")
    try:
        if not name:
            raise ValueError
        return name, size_wxh(size)
    except ValueError:
        raise SystemExit(f"--camera must look like front:96x96 (name:width x height), got '{text}'") from None


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as err:
        raise SystemExit(f"--token-file {path}: cannot read it ({err.strerror})") from None
    if not token:
        raise SystemExit(f"--token-file {path} is empty; put a long random secret in it (e.g. openssl rand -hex 32)")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logging.getLogger(__name__).warning("token file %s is readable by other users; chmod 600 it", path)
    return token


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vla.runtime.cli")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()

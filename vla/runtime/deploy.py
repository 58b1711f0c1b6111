"""`vla deploy`: teleoperation and a policy on one arm, through the real-time loop; `vla chunking-eval`.

    vla deploy --robot so101 --port /dev/ttyACM0 --id my_arm --policy CKPT \\
               --camera front=0 --camera wrist=2:640x480@30 \\
               --teleop so101-leader --teleop-port /dev/ttyACM1 --teleop-id my_leader --task "pick up the red cube"
    vla deploy --robot virtual --policy CKPT --teleop virtual --task reach --duration 20 --plot run.png
    vla deploy ... --server tcp://gpu-box:8765 --token-file key       # the policy runs on another machine

Starts under teleoperation when a leader is given (else under the policy). Keys (then ENTER): `p` policy drives,
`t` operator drives, `e` end the recorded episode, `q` quit; moving the leader while the policy drives also hands
control to the operator. `--record DIR` writes what happened as a LeRobot dataset with `control_source`.
`--robot virtual` runs the virtual SO-101 of `vla virtual-arm`, its twin in the sim scene of `--virtual-task`.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from pathlib import Path
from typing import Any

from vla.runtime.chunking import STRATEGIES
from vla.runtime.policy import add_inference_args

COMMANDS = ("deploy", "chunking-eval")


RTC_HELP = ("how --strategy rtc continues the committed actions: guidance (inpainting through the expert, any "
            "checkpoint), training (for checkpoints trained with rtc_max_delay: no backward pass), off")

def add_parsers(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("deploy", help="run a policy (and a leader arm) on a follower through the real-time loop",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    d.add_argument("--robot", choices=["so101", "koch", "virtual"], required=True)
    d.add_argument("--port", help="the follower's serial port (not for --robot virtual)")
    d.add_argument("--id", default="default", help="the follower's name: its calibration file is <id>.json")
    d.add_argument("--calibration", type=Path, help="calibration file (default: LeRobot's place for --id)")
    d.add_argument("--camera", action="append", default=[], metavar="NAME=SOURCE[:WxH][@FPS]",
                   help="a camera the policy sees as observation.images.NAME: an OpenCV index or device path (read "
                        "with LeRobot's OpenCVCamera), or test-pattern; repeat for more cameras")  # fmt: skip
    src = d.add_mutually_exclusive_group()
    src.add_argument("--policy", help="checkpoint directory (pretrained_model), or 'scripted'")
    src.add_argument("--server", help="a `vla serve` URL, e.g. tcp://gpu-box:8765")
    d.add_argument("--token-file", type=Path, help="the server's shared secret")
    d.add_argument("--teleop", choices=["none", "so101-leader", "koch-leader", "virtual"], default="none")
    d.add_argument("--teleop-port")
    d.add_argument("--teleop-id", default="default")
    d.add_argument("--task", default="", help="the instruction given to the policy")
    d.add_argument("--fps", type=float, default=30.0)
    d.add_argument("--strategy", choices=list(STRATEGIES), default="rtc")
    d.add_argument("--execute", type=int, help="actions of each chunk executed before asking again")
    d.add_argument("--rtc", choices=["guidance", "training", "off"], default="guidance",
                   help=RTC_HELP)
    d.add_argument("--device", default="cpu")
    add_inference_args(d)
    d.add_argument("--duration", type=float, help="stop after this many seconds (default: until q or Ctrl-C)")
    d.add_argument("--start", choices=["teleop", "policy"], help="who drives first (default: teleop if any)")
    d.add_argument("--max-step", type=float, default=10.0, help="safety: largest change per tick (deg, 0-100)")
    d.add_argument("--safe-state", choices=["hold", "release"], default="hold",
                   help="after --safe-after s without fresh actions")  # fmt: skip
    d.add_argument("--safe-after", type=float, default=1.0)
    d.add_argument("--on-exit", choices=["hold", "release"], default="hold")
    d.add_argument("--record", type=Path, help="write the run to a LeRobot dataset here (appends)")
    d.add_argument("--plot", type=Path, help="save a plot of commanded vs measured joints here")
    d.add_argument("--no-realtime", action="store_true", help="do not ask for SCHED_FIFO and mlockall")
    d.add_argument("--virtual-task", default="reach", help="--robot virtual: the sim scene of the twin")
    d.add_argument("--seed", type=int, default=0)

    e = sub.add_parser("chunking-eval", help="compare chunking strategies in sim under simulated inference delays")
    e.add_argument("--policy", required=True, help="checkpoint directory (pretrained_model)")
    e.add_argument("--env", default="so101/reach")
    e.add_argument("--latency", type=float, nargs="+", default=[0.0, 0.1, 0.2], help="seconds")
    e.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    e.add_argument("--episodes", type=int, default=20)
    e.add_argument("--execute", type=int)
    e.add_argument("--rtc", choices=["guidance", "training", "off"], default="guidance",
                   help=RTC_HELP)
    e.add_argument("--out", type=Path, help="write the results as JSON here")
    add_inference_args(e)


def run(args: argparse.Namespace) -> None:
    if args.command == "deploy":
        deploy(args)
    else:
        chunking_eval(args)


def chunking_eval(args: argparse.Namespace) -> None:
    import json

    from vla.runtime.checkpoint import CheckpointPolicy
    from vla.runtime.evaluate import as_dicts, evaluate_chunking, format_table

    policy = CheckpointPolicy(args.policy, rtc_mode=args.rtc, dtype=args.dtype, compile=args.compile)
    results = evaluate_chunking(policy, args.env, args.strategies, args.latency, args.episodes, execute=args.execute)
    print(format_table(results))
    if args.out:
        args.out.write_text(json.dumps(as_dicts(results), indent=2))


def _policy_source(args: argparse.Namespace, names: tuple[str, ...]):
    from vla.runtime.worker import PolicySource

    if args.server:
        from vla.runtime.cli import read_token

        return PolicySource("remote", path=args.server, token=read_token(args.token_file) if args.token_file else None)
    if args.policy == "scripted":
        from vla.runtime.policy import PolicySpec

        spec = PolicySpec(chunk_size=50, action_names=tuple(names), state_names=tuple(names),
                          cameras={"front": (96, 96), "wrist": (96, 96)}, fps=args.fps, supports_prefix=True)
        return PolicySource("scripted", spec=spec)
    if args.policy:
        return PolicySource("checkpoint", path=args.policy, device=args.device, rtc_mode=args.rtc, dtype=args.dtype,
                            compile=args.compile, task=args.task)  # fmt: skip
    return None


def deploy(args: argparse.Namespace) -> None:
    """Open the arm and its cameras, the operator's leader, the policy; run the loop; report what happened."""
    from vla.runtime.loop import ControlLoop, LoopConfig
    from vla.signals import sigterm_as_interrupt

    with contextlib.ExitStack() as stack:
        port, robot, calibration, frames = _open_robot_side(args, stack)
        io = _connect_follower(args, stack, port, robot, calibration, frames)
        stack.enter_context(sigterm_as_interrupt())
        teleop, virtual_hand = _connect_leader(args, stack)
        worker = _start_worker(args, stack, io)
        recorder = _open_recorder(args, stack, io, robot)
        on_mode_request = None
        if virtual_hand is not None:

            def on_mode_request(mode: str) -> None:  # the scripted operator lets go when the policy takes over
                if mode == "policy":
                    virtual_hand.freeze()
                else:
                    virtual_hand.resume()

        config = LoopConfig(fps=args.fps, strategy=args.strategy, execute=args.execute, safe_after_s=args.safe_after,
                            safe_state=args.safe_state, realtime=not args.no_realtime)  # fmt: skip
        loop = ControlLoop(io, worker, config, teleop=teleop, on_tick=recorder, on_mode_request=on_mode_request)
        if args.start:
            loop.request_mode(args.start)
        _keys(loop, recorder)
        print("keys (then ENTER): p = policy drives, t = operator drives, e = end episode, q = quit", flush=True)
        try:
            log = loop.run(duration_s=args.duration)
        except KeyboardInterrupt:
            log = loop.log
            log.stop_reason = "interrupted"
        _report(args, log)
        failure = log.policy_failure() if worker is not None else None
        if failure:
            raise SystemExit(f"error: {failure}")


def _open_robot_side(args: argparse.Namespace, stack: contextlib.ExitStack) -> tuple[str, str, Any, Any]:
    """-> (serial port, robot kind, calibration path, frame source): the virtual arm with its twin's cameras, or a
    real arm's port and the `--camera` readers."""
    if args.robot == "virtual":
        from vla.envs.registry import task_scene
        from vla.hardware.virtual.arm import VirtualArm
        from vla.hardware.virtual.twin import MujocoTwin
        from vla.runtime.io import SharedFrames

        if args.camera:
            raise SystemExit("--camera is for real robots: the virtual arm's twin provides its own cameras")
        from vla.envs.rollout import env_views
        from vla.runtime.checkpoint import checkpoint_cameras

        # the twin films what a local checkpoint was trained on (its cameras, at its size); else front and wrist
        trained = checkpoint_cameras(args.policy) if args.policy not in (None, "", "scripted") else None
        scene = task_scene(args.virtual_task, seed=args.seed, **env_views(trained))
        arm = stack.enter_context(VirtualArm("so101", scene=scene, seed=args.seed))
        assert arm.frames_layout is not None and isinstance(arm.twin, MujocoTwin)
        shared = SharedFrames(arm.frames_layout)
        stack.callback(shared.close)
        if not args.task:
            args.task = arm.twin.instruction
        print(f"virtual SO-101 on {arm.port}, twin in the '{args.virtual_task}' scene: \"{args.task}\"")
        return arm.port, "so101", arm.calibration_path, shared
    if not args.port:
        raise SystemExit("--port is required (the follower's serial port)")
    if not args.camera:
        return args.port, args.robot, args.calibration, None
    from vla.runtime.cameras import CameraFrames, CameraSpec

    try:
        specs = [CameraSpec.parse(text) for text in args.camera]
    except ValueError as err:
        raise SystemExit(f"--camera: {err}") from None
    print(f"opening cameras {', '.join(s.name for s in specs)} ...", flush=True)
    camera_frames = CameraFrames(specs)
    stack.callback(camera_frames.close)
    return args.port, args.robot, args.calibration, camera_frames


def _connect_follower(args: argparse.Namespace, stack: contextlib.ExitStack, port: str, robot: str,
                      calibration: Any, frames: Any) -> Any:  # fmt: skip
    from vla.hardware.arms import arm_spec
    from vla.hardware.robots import Follower
    from vla.hardware.safety import SafetyConfig
    from vla.runtime.io import FollowerIO

    follower = Follower(arm_spec(robot, "follower"), port, args.id, on_exit=args.on_exit,
                        safety=SafetyConfig(max_step=args.max_step), calibration_path=calibration)  # fmt: skip
    follower.connect()
    stack.callback(follower.disconnect)
    return FollowerIO(follower, frames)


def _connect_leader(args: argparse.Namespace, stack: contextlib.ExitStack) -> tuple[Any, Any]:
    """-> (the operator's `LeaderIO` or None, the virtual leader's scripted hand or None)."""
    if args.teleop == "none":
        return None, None
    from vla.hardware.robots import KochLeader, SO101Leader
    from vla.runtime.io import LeaderIO

    virtual_hand = None
    if args.teleop == "virtual":
        from vla.hardware.virtual.arm import VirtualArm

        leader_arm = stack.enter_context(VirtualArm("so101", role="leader", seed=args.seed))
        leader: Any = SO101Leader(leader_arm.port, calibration_path=leader_arm.calibration_path)
        virtual_hand = getattr(leader_arm.twin, "hand", None)  # the scripted operator: lets go for the policy
    else:
        if not args.teleop_port:
            raise SystemExit("--teleop-port is required with a leader arm")
        leader = (SO101Leader if args.teleop == "so101-leader" else KochLeader)(args.teleop_port, args.teleop_id)
    leader.connect()
    stack.callback(leader.disconnect)
    return LeaderIO(leader), virtual_hand


def _start_worker(args: argparse.Namespace, stack: contextlib.ExitStack, io: Any) -> Any:
    """The inference worker with the policy loaded, its cameras checked against the robot's; None without one."""
    from vla.runtime.worker import InferenceWorker

    source = _policy_source(args, io.names)
    if source is None:
        return None
    cameras = {name: tuple(f.shape[:2]) for name, f in io.frames().items()}
    worker = InferenceWorker(source, state_dim=len(io.names), cameras=cameras, task=args.task)
    print("loading the policy in the inference worker ...", flush=True)
    spec = worker.start()
    stack.callback(worker.stop)
    missing, unknown = sorted(set(spec.cameras) - set(cameras)), sorted(set(cameras) - set(spec.cameras))
    if missing or unknown:
        raise SystemExit(f"the policy was trained with camera(s) {sorted(spec.cameras)}; this robot provides "
                         f"{sorted(cameras)} (missing {missing}, unknown {unknown}): name each --camera as "
                         "in the policy's dataset (observation.images.NAME)")  # fmt: skip
    for name, (h, w) in sorted(cameras.items()):
        th, tw = spec.cameras[name]
        if (h, w) != (th, tw):
            print(f"camera {name}: {w}x{h} frames resized to the policy's {tw}x{th} (as `vla data cache "
                  "--size` resizes training frames)", flush=True)
    return worker


def _open_recorder(args: argparse.Namespace, stack: contextlib.ExitStack, io: Any, robot: str) -> Any:
    if not args.record:
        return None
    from vla.runtime.review import InterventionRecorder

    cams = {name: tuple(f.shape[:2]) for name, f in io.frames().items()}
    recorder = InterventionRecorder(args.record, args.fps, io.names, cams, args.task, robot_type=f"{robot}_follower")
    stack.callback(recorder.close)
    return recorder


def _report(args: argparse.Namespace, log: Any) -> None:
    print(f"stopped ({log.stop_reason}) after {len(log.t)} ticks; {log.realtime}")
    if log.lateness:
        import numpy as np

        late = np.array(log.lateness) * 1000
        print(f"tick lateness p50 {np.percentile(late, 50):.2f} ms, p99 {np.percentile(late, 99):.2f} ms, "
              f"max {late.max():.2f} ms; overruns {log.overruns}; chunks {len(log.chunk_latency_s)}")  # fmt: skip
    for _, event in log.events[-10:]:
        print(f"  {event}")
    for message, count in log.inference_errors.items():
        if count > 1:
            print(f"  inference failed {count} times: {message[:200]}")
    if args.plot and log.t:
        from vla.runtime.review import plot_run

        print(f"plot: {plot_run(log, args.plot)}")


def _keys(loop, recorder) -> None:
    """Read commands from stdin in the background (line by line) when it is a terminal or a pipe."""

    def read() -> None:
        for line in sys.stdin:
            key = line.strip().lower()[:1]
            with contextlib.suppress(ValueError):
                if key == "p":
                    loop.request_mode("policy")
                elif key == "t":
                    loop.request_mode("teleop")
                elif key == "e" and recorder is not None:
                    recorder.end_episode()
                elif key == "q":
                    loop.stop()
                    return

    if sys.stdin is not None and not sys.stdin.closed:
        threading.Thread(target=read, name="keys", daemon=True).start()

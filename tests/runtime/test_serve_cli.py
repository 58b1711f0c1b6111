"""`vla serve` (vla.runtime.cli): defaults, the scripted stand-in's spec, tokens from a file, clear refusals."""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import JOINTS

from vla.runtime import cli
from vla.runtime.client import RemotePolicy, RequestRejected
from vla.runtime.messages import ErrorCode
from vla.runtime.policy import RequestObservation


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["serve", *argv])


def test_defaults_listen_on_loopback_port_8765_without_a_token() -> None:
    args = parse("--policy", "scripted")
    assert (args.host, args.port, args.token, args.token_file, args.device) == ("127.0.0.1", 8765, None, None, "cpu")


def test_scripted_default_spec_is_an_so101_with_one_front_camera() -> None:
    spec = cli.scripted_spec(parse("--policy", "scripted"))
    assert spec.action_names == spec.state_names == JOINTS
    assert spec.action_names[0] == "shoulder_pan.pos" and spec.action_names[-1] == "gripper.pos"
    assert (spec.chunk_size, spec.fps, spec.cameras) == (50, 30.0, {"front": (96, 96)})
    custom = cli.scripted_spec(parse("--policy", "scripted", "--joints", "a,b", "--camera", "top:640x480",
                                     "--camera", "wrist:320x240", "--chunk-size", "8", "--fps", "50"))  # fmt: skip
    assert custom.action_names == ("a.pos", "b.pos") and custom.chunk_size == 8 and custom.fps == 50
    assert custom.cameras == {"top": (480, 640), "wrist": (240, 320)}  # width x height in, (height, width) out


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--camera", "front"], "--camera must look like front:96x96"),
        (["--camera", "front:0x96"], "--camera must look like"),
        (["--joints", ","], "at least one joint"),
    ],
)
def test_bad_scripted_flags_exit_with_a_message(argv: list[str], match: str) -> None:
    with pytest.raises(SystemExit, match=match):
        cli.scripted_spec(parse("--policy", "scripted", *argv))


def test_a_zero_chunk_size_is_refused_while_parsing(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse("--policy", "scripted", "--chunk-size", "0")
    assert exit_info.value.code == 2
    assert "argument --chunk-size: must be >= 1, got 0" in capsys.readouterr().err


def test_missing_checkpoint_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=f"--policy {tmp_path / 'nope'}: no such checkpoint directory"):
        cli.load_policy(parse("--policy", str(tmp_path / "nope")))


def test_token_file_problems_are_explained(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="cannot read it"):
        cli.read_token(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SystemExit, match="is empty"):
        cli.read_token(empty)
    good = tmp_path / "key"
    good.write_text("  s3cret-value\n")
    good.chmod(0o600)
    assert cli.read_token(good) == "s3cret-value"


def test_token_and_token_file_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--policy", "scripted", "--token", "a", "--token-file", "b")
    assert "not allowed with argument" in capsys.readouterr().err


def test_vla_serve_scripted_with_a_token_file(
    tmp_path: Path, spawn: Callable[..., tuple[subprocess.Popen[str], str]]
) -> None:
    key = tmp_path / "key"
    key.write_text("0123456789abcdef\n")
    key.chmod(0o600)
    _, url = spawn("--policy", "scripted", "--port", "0", "--token-file", str(key))
    assert url.startswith("tcp://127.0.0.1:")
    with pytest.raises(RequestRejected) as err:
        RemotePolicy(url, token="guess")
    assert err.value.code == ErrorCode.UNAUTHORIZED
    with RemotePolicy(url, token="0123456789abcdef") as remote:
        assert remote.spec.cameras == {"front": (96, 96)} and remote.spec.action_names == JOINTS
        state = np.arange(6, dtype=np.float32)
        obs = RequestObservation(state, {"front": np.zeros((96, 96, 3), np.uint8)}, "wave")
        actions = remote.infer(obs)
    assert actions.shape == (50, 6) and actions.dtype == np.float32
    assert np.all(np.abs(actions - state) <= 10.0 + 1e-4)  # ScriptedPolicy: a +-10 sinusoid around the state

"""Bad input on the command line ends in one line that names the flag or file, a non-zero exit and no traceback
(`VLA_DEBUG=1` shows one)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vla.cli import main

FLAGS = {
    "serve port out of range": (["serve", "--policy", "scripted", "--port", "99999"], "--port: must be >= 0"),
    "serve no clients": (["serve", "--policy", "scripted", "--max-clients", "0"], "--max-clients: must be >= 1"),
    "serve zero idle timeout": (["serve", "--policy", "scripted", "--idle-timeout", "0"], "--idle-timeout: must be"),
    "serve tiny frames": (["serve", "--policy", "scripted", "--max-frame-mib", "0.01"], "--max-frame-mib: must be"),
    "rollout zero episodes": (["rollout", "--policy", "expert", "--env", "so101/reach", "--episodes", "0"],
                              "--episodes: must be >= 1"),
    "demo images on the synthetic task": (["demo", "--synthetic", "--images"], "--images: records the sim's"),
    "record a blank camera name": (["record", "--env", "so101/reach", "--out", "/tmp/x", "--cameras", "close,,wrist"],
                                   "--cameras: must be distinct names"),
    "rollout no action samples": (["rollout", "--policy", "expert", "--env", "so101/reach", "--action-samples", "0"],
                                  "--action-samples: must be >= 1"),
    "rollout missing checkpoint": (["rollout", "--policy", "/nonexistent/ckpt", "--env", "so101/reach"],
                                   "/nonexistent/ckpt is not a directory"),
}


@pytest.mark.parametrize("case", FLAGS, ids=list(FLAGS))
def test_bad_flags_are_named(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv, expected = FLAGS[case]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and expected in err and "Traceback" not in err, err


def test_unloadable_checkpoints_end_in_one_line_naming_the_file(so101_checkpoint: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("VLA_DEBUG", raising=False)
    truncated = tmp_path / "truncated"
    shutil.copytree(so101_checkpoint, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    foreign = tmp_path / "foreign"
    shutil.copytree(so101_checkpoint, foreign)
    (foreign / "config.json").write_text('{"type": "not-a-policy"}')
    for path in (truncated, foreign):
        with pytest.raises(SystemExit) as exit_info:
            main(["rollout", "--policy", str(path), "--env", "so101/reach", "--episodes", "1", "--out",
                  str(tmp_path / "out")])  # fmt: skip
        message = str(exit_info.value.code)
        assert message.startswith("error: ") and str(path) in message and "\n" not in message, message
    monkeypatch.setenv("VLA_DEBUG", "1")  # the traceback, for a bug report
    with pytest.raises(ValueError, match="cannot load the policy checkpoint"):
        main(["rollout", "--policy", str(truncated), "--env", "so101/reach", "--episodes", "1", "--out",
              str(tmp_path / "out")])  # fmt: skip


def test_a_stopped_recording_says_how_to_go_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    import vla.envs.collect as collect

    argv = ["record", "--env", "so101/reach", "--episodes", "2", "--out", str(tmp_path / "d")]
    with pytest.raises(SystemExit, match="--top-up counts the episodes already in --out: add --resume"):
        main([*argv, "--top-up"])

    def stopped(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("signal 15")

    monkeypatch.setattr(collect, "record", stopped)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 130 and f"kept in {tmp_path / 'd'}" in err and "--resume" in err, err

"""The wire schema on its own: every message kind survives encode/decode, and malformed payloads become typed
errors that name what was wrong."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
from runtime_helpers import REPO, SPEC, make_obs

from vla.runtime import messages as m


def roundtrip(msg: m.Message) -> m.Message:
    return m.decode(m.encode(msg))


def test_every_message_kind_round_trips() -> None:
    obs = make_obs()
    obs.prefix, obs.delay = np.ones((5, 6), np.float64) / 3, 2
    actions = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    assert roundtrip(m.Hello("s3cret", "robot-1")) == m.Hello("s3cret", "robot-1")
    assert roundtrip(m.Hello(None, "")) == m.Hello(None, "")
    assert roundtrip(m.SpecMessage(SPEC, 1234)) == m.SpecMessage(SPEC, 1234)
    assert roundtrip(m.Reset(7)) == m.Reset(7)
    assert roundtrip(m.ResetDone(7)) == m.ResetDone(7)
    assert roundtrip(m.Error("bad_request", "state has NaN", 3)) == m.Error("bad_request", "state has NaN", 3)

    req = roundtrip(m.InferRequest(41, 123.5, obs))
    assert isinstance(req, m.InferRequest) and (req.seq, req.sent) == (41, 123.5)
    assert req.obs.task == obs.task and req.obs.delay == 2 and req.obs.prefix is not None
    for got, sent in [(req.obs.state, obs.state), (req.obs.prefix, obs.prefix)] + [  # type: ignore[list-item]
        (req.obs.images[k], obs.images[k]) for k in obs.images
    ]:
        assert got.dtype == sent.dtype and got.shape == sent.shape and got.tobytes() == sent.tobytes()

    reply = roundtrip(m.InferReply(41, 123.5, actions, 0.012))
    assert isinstance(reply, m.InferReply) and reply.actions.tobytes() == actions.tobytes()
    assert reply.actions.flags.writeable, "callers may clip actions in place, as with a local policy"


def test_arrays_are_little_endian_on_the_wire_and_native_after() -> None:
    big = np.arange(6, dtype=">f4").reshape(2, 3)
    packed = m.pack_array(big)
    assert packed["data"] == np.arange(6, dtype="<f4").tobytes()
    back = m.unpack_array(packed, "x")
    assert back.dtype == np.float32 and np.array_equal(back, big)


@pytest.mark.parametrize("dtype", [object, bool, np.complex64, "U3", np.int8])
def test_dtypes_outside_the_allow_list_cannot_be_sent(dtype: object) -> None:
    with pytest.raises(m.MalformedMessage, match="cannot send an array of dtype"):
        m.pack_array(np.zeros(3, dtype=dtype))


def infer_body(**array: object) -> bytes:
    state = {"dtype": "float32", "shape": [6], "data": bytes(24)} | array
    obs = {"state": state, "images": {}, "task": "", "prefix": None, "delay": 0}
    return msgpack.packb({"v": 1, "kind": "infer", "seq": 1, "sent": 0.0, "obs": obs})


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\xc1", "not a valid msgpack message"),  # 0xc1 is never used in msgpack
        (b"\x93\x01\x02", "not a valid msgpack message"),  # truncated array
        (msgpack.packb([1, 2]), "must be a msgpack map"),
        (msgpack.packb({"v": 1, "kind": "hello", "token": None, "client": ""}) + b"\x00", "extra data"),
        (msgpack.packb({1: 2}), "not allowed for map key"),
        (msgpack.packb({"v": 1, "kind": "hello", "token": msgpack.ExtType(1, b"obj"), "client": ""}), "max_ext_len"),
        (msgpack.packb({"v": 1, "kind": "teleport"}), "unknown message kind 'teleport'"),
        (msgpack.packb({"v": 1, "kind": "hello", "client": ""}), "hello: missing field"),
        (msgpack.packb({"v": 1, "kind": "hello", "token": None, "client": "", "admin": True}), "unknown field"),
        (msgpack.packb({"v": 1, "kind": "hello", "token": 42, "client": ""}), "hello.token must be a string"),
        (msgpack.packb({"v": 1, "kind": "reset", "seq": True}), "reset.seq must be an integer"),
        (msgpack.packb({"v": 1, "kind": "reset", "seq": -1}), "reset.seq must be an integer"),
        (msgpack.packb({"v": 1, "kind": "reset", "seq": "1"}), "reset.seq must be an integer"),
        (msgpack.packb({"v": 1, "kind": "error", "code": 5, "message": "x"}), "'code' and 'message' must be strings"),
        (infer_body(dtype="object"), "dtype 'object' is not allowed"),
        (infer_body(dtype="|O"), "dtype '|O' is not allowed"),
        (infer_body(data=bytes(23)), "23 bytes of data for shape"),
        (infer_body(shape=[2**40]), "must be an integer in"),
        (infer_body(shape=[1] * 9), "at most 8 sizes"),
        (infer_body(shape=[-6]), "must be an integer in"),
        (infer_body(data="text"), "data must be msgpack binary"),
        (msgpack.packb([[]] * 2000), "array is too large|exceeds max_array_len"),
        (msgpack.packb({"v": 1, "x": [[[]] * 200] * 200}), "more than 1024 arrays and maps"),
        (b"\x91" * 5000, "nesting too deep"),
    ],
)
def test_malformed_payloads_raise_a_typed_error_naming_the_problem(payload: bytes, match: str) -> None:
    with pytest.raises(m.MalformedMessage, match=match):
        m.decode(payload)


def test_another_protocol_version_is_refused_but_its_errors_still_read() -> None:
    with pytest.raises(m.UnsupportedVersion, match="version 2 received, this end speaks version 1"):
        m.decode(msgpack.packb({"v": 2, "kind": "hello", "token": None, "client": ""}))
    future_error = msgpack.packb({"v": 2, "kind": "error", "code": "unauthorized", "message": "no", "extra": 1})
    assert m.decode(future_error) == m.Error("unauthorized", "no", None)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda o: setattr(o, "state", o.state[:5]), r"state must be a float array of shape \(6,\)"),
        (lambda o: setattr(o, "state", o.state.astype(np.int64)), "state must be a float array"),
        (lambda o: o.state.__setitem__(2, np.nan), r"state contains NaN or infinity at index \[2\]"),
        (lambda o: o.state.__setitem__(0, np.inf), "NaN or infinity"),
        (lambda o: o.images.pop("wrist"), r"missing camera\(s\) \['wrist'\]"),
        (lambda o: o.images.__setitem__("top", o.images["front"]), r"camera\(s\) \['top'\] are not in"),
        (lambda o: o.images.__setitem__("wrist", o.images["wrist"].transpose(1, 0, 2)), r"\(48, 64, 3\)"),
        (lambda o: o.images.__setitem__("front", o.images["front"].astype(np.float32)), "must be uint8"),
        (lambda o: setattr(o, "prefix", np.zeros((51, 6), np.float32)), "at most 50 finite actions"),
        (lambda o: setattr(o, "prefix", np.zeros((3, 5), np.float32)), r"shape \(d, 6\)"),
        (lambda o: setattr(o, "delay", 1), r"delay must be an integer in \[0, len\(prefix\)=0\]"),
    ],
)
def test_observations_that_do_not_fit_the_spec_are_refused(change: object, match: str) -> None:
    obs = make_obs()
    change(obs)  # type: ignore[operator]
    with pytest.raises(m.InvalidObservation, match=match):
        m.check_observation(obs, SPEC)


def test_a_policy_chunk_of_the_wrong_shape_or_with_nan_is_caught() -> None:
    good = np.zeros((50, 6), np.float32)
    assert m.check_actions(good, SPEC) is good
    with pytest.raises(m.PolicyFailed, match=r"float32 of shape \(50, 6\)"):
        m.check_actions(np.zeros((49, 6), np.float32), SPEC)
    with pytest.raises(m.PolicyFailed, match="NaN"):
        m.check_actions(np.full((50, 6), np.nan, np.float32), SPEC)


RUNTIME = [REPO / "vla/runtime" / f for f in ("messages.py", "server.py", "client.py")]
FORBIDDEN = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve", "torch"}


@pytest.mark.parametrize("path", RUNTIME, ids=lambda p: p.name)
def test_protocol_modules_never_import_pickle_or_torch(path: Path) -> None:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN
    assert "allow_pickle" not in path.read_text()


def test_the_robot_side_loads_without_torch() -> None:
    code = (
        "import sys; import vla.runtime.messages, vla.runtime.server, vla.runtime.client, vla.runtime.cli; "
        "bad = [m for m in ('torch', 'dill', 'cloudpickle') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)

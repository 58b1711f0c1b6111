"""The wire protocol between the policy server and `RemotePolicy`: versioned msgpack messages in length-prefixed frames.

A frame is a 4-byte big-endian payload length followed by one msgpack map. Every map carries `"v"` (the protocol
version) and `"kind"`:

    kind      direction         fields
    hello     client -> server  token (str | nil), client (str)
    spec      server -> client  spec (PolicySpec as a map), max_frame (the largest frame the server reads)
    infer     client -> server  seq, sent (client's monotonic send time), obs (RequestObservation as a map)
    actions   server -> client  seq, sent (echoed), actions (chunk_size, A) float32, compute_s (policy time)
    reset     client -> server  seq
    reset_ok  server -> client  seq
    error     either way        code (ErrorCode), message (what was wrong and what to do), seq (int | nil)

An array travels as {"dtype", "shape", "data"}: raw little-endian bytes of an allow-listed dtype, and decoding
checks len(data) == prod(shape) * itemsize. Nothing is ever pickled and msgpack extension types are refused.

Notable features:
- Decoding is strict and bounded (`raw=False`, `strict_map_key=True`, caps on string/binary/array/map lengths and
  on the number of containers per message, so a small frame cannot expand into millions of Python objects).
  Unknown or missing fields are errors, so a typo on either side fails loudly instead of being ignored.
- Every malformed input raises a `ProtocolError` subclass whose `code` goes back to the peer in an `error` message.
- `error` messages decode whatever their version, so two ends that disagree on it can still say so.
Putting frames on a socket and taking them off is `vla.runtime.framing`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgpack
import numpy as np

from vla.runtime.policy import PolicySpec, RequestObservation

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME = 16 * 1024 * 1024  # a few cameras at 480p fit; raise it on both ends for more
HANDSHAKE_MAX_FRAME = 64 * 1024  # before a client has said hello (and shown its token) it gets no more than this
DTYPES = {name: np.dtype(name).newbyteorder("<") for name in ("uint8", "int64", "float32", "float64")}
MAX_DIMS = 8
MAX_NAMES = 256  # array and map lengths: joints, cameras, shape dimensions
MAX_CONTAINERS = 1024  # arrays + maps in one message
MAX_TASK_CHARS = 65536


class ErrorCode(StrEnum):
    MALFORMED = "malformed"  # not msgpack, wrong fields or types, bad array
    TOO_LARGE = "too_large"  # frame above the receiver's limit
    VERSION = "version"  # protocol versions differ
    UNAUTHORIZED = "unauthorized"  # token missing or wrong
    BAD_REQUEST = "bad_request"  # well formed, but the observation does not match the policy's spec
    UNEXPECTED = "unexpected"  # a valid message of the wrong kind at this point (e.g. infer before hello)
    TIMEOUT = "timeout"  # a frame (or the hello) did not arrive in time
    POLICY_FAILED = "policy_failed"  # the policy raised or returned a chunk that does not match its spec
    BUSY = "busy"  # the server has its maximum number of clients
    SHUTDOWN = "shutdown"  # the server is stopping (a goodbye: reconnect later, or to another server)


MAX_ERROR_TEXT = 400  # characters of an error message: it goes back to the sender and into the log


def bounded(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    """`text` cut to `limit` characters, saying how much was cut: error messages quote what a peer sent, and a
    peer must not be able to make replies or logs as large as its requests."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters cut)"


class ProtocolError(ValueError):
    """Input that breaks the protocol. `code` is what the receiver reports back to the sender. The message is
    bounded (`bounded`), whatever the input it quotes."""

    code = ErrorCode.MALFORMED

    def __init__(self, message: object = "") -> None:
        super().__init__(bounded(str(message)))


class MalformedMessage(ProtocolError):
    code = ErrorCode.MALFORMED


class FrameTooLarge(ProtocolError):
    code = ErrorCode.TOO_LARGE


class UnsupportedVersion(ProtocolError):
    code = ErrorCode.VERSION


class InvalidObservation(ProtocolError):
    """An observation that does not match the policy's spec (shape, dtype, cameras, NaN)."""

    code = ErrorCode.BAD_REQUEST


class Unauthorized(ProtocolError):
    code = ErrorCode.UNAUTHORIZED


class UnexpectedMessage(ProtocolError):
    code = ErrorCode.UNEXPECTED


class PolicyFailed(ProtocolError):
    """The policy raised, or returned a chunk that does not match its own spec."""

    code = ErrorCode.POLICY_FAILED


class PeerClosed(ConnectionError):
    """The other end closed the connection; `mid_frame` if it did so part-way through a frame."""

    def __init__(self, message: str, mid_frame: bool):
        super().__init__(message)
        self.mid_frame = mid_frame


class FrameTimeout(TimeoutError):
    """A frame did not arrive in time; after a `mid_frame` timeout the stream is out of sync and must be closed."""

    def __init__(self, message: str, mid_frame: bool):
        super().__init__(message)
        self.mid_frame = mid_frame


@dataclass(frozen=True)
class Hello:
    token: str | None = None
    client: str = ""


@dataclass(frozen=True)
class SpecMessage:
    spec: PolicySpec
    max_frame: int = DEFAULT_MAX_FRAME


@dataclass(frozen=True)
class InferRequest:
    seq: int
    sent: float
    obs: RequestObservation


@dataclass(frozen=True)
class InferReply:
    seq: int
    sent: float
    actions: np.ndarray
    compute_s: float


@dataclass(frozen=True)
class Reset:
    seq: int


@dataclass(frozen=True)
class ResetDone:
    seq: int


@dataclass(frozen=True)
class Error:
    code: str
    message: str
    seq: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", bounded(str(self.message)))  # whoever built it, replies stay small


Message = Hello | SpecMessage | InferRequest | InferReply | Reset | ResetDone | Error
_KINDS: dict[type, str] = {Hello: "hello", SpecMessage: "spec", InferRequest: "infer", InferReply: "actions",
                           Reset: "reset", ResetDone: "reset_ok", Error: "error"}  # fmt: skip


# ---- encoding -------------------------------------------------------------------------------------------------


def encode(msg: Message) -> bytes:
    """The msgpack payload of one message (no frame header). Raises `ProtocolError` for an unsendable array."""
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "kind": _KINDS[type(msg)]}
    if isinstance(msg, Hello):
        body |= {"token": msg.token, "client": msg.client}
    elif isinstance(msg, SpecMessage):
        body |= {"spec": spec_to_map(msg.spec), "max_frame": msg.max_frame}
    elif isinstance(msg, InferRequest):
        body |= {"seq": msg.seq, "sent": msg.sent, "obs": _pack_obs(msg.obs)}
    elif isinstance(msg, InferReply):
        body |= {"seq": msg.seq, "sent": msg.sent, "actions": pack_array(msg.actions), "compute_s": msg.compute_s}
    elif isinstance(msg, Reset | ResetDone):
        body |= {"seq": msg.seq}
    else:
        body |= {"code": str(msg.code), "message": msg.message, "seq": msg.seq}
    return msgpack.packb(body, use_bin_type=True, strict_types=False)


def pack_array(a: np.ndarray) -> dict[str, Any]:
    a = np.asarray(a)
    if a.dtype.name not in DTYPES or a.dtype.kind not in "uif":
        raise MalformedMessage(f"cannot send an array of dtype {a.dtype}; allowed: {', '.join(DTYPES)}")
    a = np.asarray(a, dtype=DTYPES[a.dtype.name], order="C")  # (ascontiguousarray would make a 0-d array 1-d)
    return {"dtype": a.dtype.name, "shape": list(a.shape), "data": a.tobytes()}


def _pack_obs(obs: RequestObservation) -> dict[str, Any]:
    return {
        "state": pack_array(obs.state),
        "images": {name: pack_array(image) for name, image in obs.images.items()},
        "task": obs.task,
        "prefix": None if obs.prefix is None else pack_array(obs.prefix),
        "delay": obs.delay,
    }


def spec_to_map(spec: PolicySpec) -> dict[str, Any]:
    """A `PolicySpec` as the plain map both codecs carry (`spec_from_map` reads it back, checking every field)."""
    return {"chunk_size": spec.chunk_size, "action_names": list(spec.action_names),
            "state_names": list(spec.state_names), "cameras": {k: list(v) for k, v in spec.cameras.items()},
            "fps": float(spec.fps), "supports_prefix": spec.supports_prefix}  # fmt: skip


# ---- decoding -------------------------------------------------------------------------------------------------


def decode_map(payload: bytes | bytearray | memoryview) -> dict[str, Any]:
    """One bounded, strict msgpack map (the limits of the module docstring); `MalformedMessage` otherwise. The
    inference worker's pipe reads its messages with this too."""
    containers = 0

    def count(obj: Any) -> Any:
        nonlocal containers
        containers += 1
        if containers > MAX_CONTAINERS:
            raise MalformedMessage(f"more than {MAX_CONTAINERS} arrays and maps in one message")
        return obj

    try:
        body = msgpack.unpackb(
            payload, raw=False, strict_map_key=True, use_list=True, list_hook=count, object_hook=count,
            max_str_len=MAX_TASK_CHARS * 4, max_bin_len=len(payload), max_array_len=MAX_NAMES,
            max_map_len=MAX_NAMES, max_ext_len=0, ext_hook=_refuse_ext,
        )  # fmt: skip
    except ProtocolError:
        raise
    except msgpack.StackError:
        raise MalformedMessage("msgpack nesting too deep") from None
    except Exception as err:  # the decoder's own errors: ValueError, FormatError, ExtraData, UnicodeDecodeError...
        raise MalformedMessage(f"not a valid msgpack message: {type(err).__name__}: {err}") from None
    if not isinstance(body, dict):
        raise MalformedMessage(f"a message must be a msgpack map, got {type(body).__name__}")
    return body


def decode(payload: bytes | bytearray | memoryview) -> Message:
    """Parse and validate one payload. Raises `MalformedMessage` or `UnsupportedVersion`; never anything else."""
    body = decode_map(payload)
    version, kind = body.get("v"), body.get("kind")
    if kind == "error" and isinstance(body.get("code"), str) and isinstance(body.get("message"), str):
        seq = body.get("seq")  # error messages are readable across versions
        return Error(body["code"], body["message"], seq if isinstance(seq, int) and not isinstance(seq, bool) else None)
    if type(version) is not int or version != PROTOCOL_VERSION:  # not True, not 1.0: the integer itself
        raise UnsupportedVersion(
            f"protocol version {version!r} received, this end speaks version {PROTOCOL_VERSION}; "
            "install the same vla version on the robot computer and on the policy server"
        )
    try:
        return _decode_body(kind, body)
    except ProtocolError:
        raise
    except (TypeError, ValueError, OverflowError) as err:  # e.g. numpy refusing a shape we already bounded
        raise MalformedMessage(f"{kind}: {err}") from None


def _refuse_ext(code: int, data: bytes) -> Any:
    raise MalformedMessage(f"msgpack extension type {code} is not allowed")


def _decode_body(kind: Any, body: dict[str, Any]) -> Message:
    if kind == "hello":
        f = _fields(body, "hello", ("token", "client"))
        token = f["token"]
        return Hello(None if token is None else _str(token, "hello.token"), _str(f["client"], "hello.client"))
    if kind == "spec":
        f = _fields(body, "spec", ("spec", "max_frame"))
        return SpecMessage(spec_from_map(f["spec"]), _int(f["max_frame"], "spec.max_frame", low=1))
    if kind == "infer":
        f = _fields(body, "infer", ("seq", "sent", "obs"))
        return InferRequest(_int(f["seq"], "infer.seq"), _float(f["sent"], "infer.sent"), _decode_obs(f["obs"]))
    if kind == "actions":
        f = _fields(body, "actions", ("seq", "sent", "actions", "compute_s"))
        actions = unpack_array(f["actions"], "actions.actions")
        return InferReply(_int(f["seq"], "actions.seq"), _float(f["sent"], "actions.sent"), actions,
                          _float(f["compute_s"], "actions.compute_s"))  # fmt: skip
    if kind in ("reset", "reset_ok"):
        seq = _int(_fields(body, kind, ("seq",))["seq"], f"{kind}.seq")
        return Reset(seq) if kind == "reset" else ResetDone(seq)
    if kind == "error":  # reached only when code or message is not a string
        raise MalformedMessage("error: 'code' and 'message' must be strings")
    raise MalformedMessage(f"unknown message kind {kind!r}; expected one of {', '.join(_KINDS.values())}")


def _decode_obs(value: Any) -> RequestObservation:
    f = _fields(value, "infer.obs", ("state", "images", "task", "prefix", "delay"))
    images = _map(f["images"], "infer.obs.images")
    task = _str(f["task"], "infer.obs.task")
    if len(task) > MAX_TASK_CHARS:
        raise MalformedMessage(f"infer.obs.task: {len(task)} characters, at most {MAX_TASK_CHARS} allowed")
    return RequestObservation(
        state=unpack_array(f["state"], "infer.obs.state"),
        images={name: unpack_array(a, f"infer.obs.images[{name!r}]") for name, a in images.items()},
        task=task,
        prefix=None if f["prefix"] is None else unpack_array(f["prefix"], "infer.obs.prefix"),
        delay=_int(f["delay"], "infer.obs.delay"),
    )


def spec_from_map(value: Any) -> PolicySpec:
    """`spec_to_map`'s inverse; raises `MalformedMessage` naming the first field that is wrong."""
    f = _fields(value, "spec.spec", ("chunk_size", "action_names", "state_names", "cameras", "fps", "supports_prefix"))
    cameras = {}
    for name, size in _map(f["cameras"], "spec.cameras").items():
        if not (isinstance(size, list) and len(size) == 2):
            raise MalformedMessage(f"spec.cameras[{name!r}] must be [height, width], got {size!r}")
        cameras[name] = (_int(size[0], "spec.cameras height", low=1), _int(size[1], "spec.cameras width", low=1))
    fps = _float(f["fps"], "spec.fps")
    if fps <= 0:
        raise MalformedMessage(f"spec.fps must be positive, got {fps}")
    if not isinstance(f["supports_prefix"], bool):
        raise MalformedMessage("spec.supports_prefix must be a boolean")
    return PolicySpec(chunk_size=_int(f["chunk_size"], "spec.chunk_size", low=1),
                      action_names=_names(f["action_names"], "spec.action_names"),
                      state_names=_names(f["state_names"], "spec.state_names"),
                      cameras=cameras, fps=fps, supports_prefix=f["supports_prefix"])  # fmt: skip


def unpack_array(value: Any, where: str) -> np.ndarray:
    """A writable numpy array from {"dtype", "shape", "data"}, after checking all three against each other."""
    f = _fields(value, where, ("dtype", "shape", "data"))
    dtype = DTYPES.get(f["dtype"]) if isinstance(f["dtype"], str) else None
    if dtype is None:
        raise MalformedMessage(f"{where}: dtype {f['dtype']!r} is not allowed; allowed: {', '.join(DTYPES)}")
    shape = f["shape"]
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise MalformedMessage(f"{where}: shape must be a list of at most {MAX_DIMS} sizes, got {shape!r}")
    dims = tuple(_int(d, f"{where}.shape", high=2**31) for d in shape)
    data = f["data"]
    if not isinstance(data, bytes):
        raise MalformedMessage(f"{where}: data must be msgpack binary, got {type(data).__name__}")
    expected = math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        raise MalformedMessage(f"{where}: {len(data)} bytes of data for shape {dims} {dtype.name} ({expected} bytes)")
    return np.frombuffer(data, dtype).reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def _fields(value: Any, where: str, names: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedMessage(f"{where} must be a map, got {type(value).__name__}")
    present = set(value) - {"v", "kind"}
    if missing := [n for n in names if n not in present]:
        raise MalformedMessage(f"{where}: missing field(s) {', '.join(missing)}")
    if unknown := sorted(map(repr, present - set(names))):
        raise MalformedMessage(f"{where}: unknown field(s) {', '.join(unknown)} (is the other end a newer version?)")
    return value


def _int(value: Any, where: str, low: int = 0, high: int = 2**63 - 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise MalformedMessage(f"{where} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _float(value: Any, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise MalformedMessage(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise MalformedMessage(f"{where} must be a string, got {type(value).__name__}")
    return value


def _map(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise MalformedMessage(f"{where} must be a map with string keys")
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MalformedMessage(f"{where} must be a list of strings")
    return tuple(value)


# ---- checks against the spec ----------------------------------------------------------------------------------


def check_observation(obs: RequestObservation, spec: PolicySpec) -> None:
    """Raise `InvalidObservation` naming the field if `obs` does not fit `spec` (shapes, dtypes, cameras, NaN)."""
    state = obs.state
    n_state, n_act = len(spec.state_names), len(spec.action_names)
    if not isinstance(state, np.ndarray) or state.dtype.kind != "f" or state.shape != (n_state,):
        raise InvalidObservation(f"state must be a float array of shape ({n_state},) for {', '.join(spec.state_names)}"
                                 f"; got {_describe(state)}")  # fmt: skip
    if not np.isfinite(state).all():
        raise InvalidObservation(f"state contains NaN or infinity at index {np.flatnonzero(~np.isfinite(state))}")
    if (big := np.abs(state) > np.finfo(np.float32).max).any():  # float64 beyond float32: inf inside the policy
        raise InvalidObservation(f"state at index {np.flatnonzero(big)} is beyond float32's range (the policy "
                                 "computes in float32); send the arm's units (degrees, 0-100)")
    if missing := sorted(set(spec.cameras) - set(obs.images)):
        raise InvalidObservation(f"images: missing camera(s) {missing}; the policy needs {sorted(spec.cameras)}")
    if extra := sorted(set(obs.images) - set(spec.cameras)):
        raise InvalidObservation(f"images: camera(s) {extra} are not in the policy's spec {sorted(spec.cameras)}")
    for name, (h, w) in spec.cameras.items():
        img = obs.images[name]
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.shape != (h, w, 3):
            raise InvalidObservation(f"images[{name!r}] must be uint8 of shape ({h}, {w}, 3); got {_describe(img)}")
    if not isinstance(obs.task, str) or len(obs.task) > MAX_TASK_CHARS:
        raise InvalidObservation(f"task must be a string of at most {MAX_TASK_CHARS} characters")
    n_prefix = 0
    if obs.prefix is not None:
        p = obs.prefix
        if not isinstance(p, np.ndarray) or p.dtype.kind != "f" or p.ndim != 2 or p.shape[1] != n_act:
            raise InvalidObservation(f"prefix must be a float array of shape (d, {n_act}); got {_describe(p)}")
        if len(p) > spec.chunk_size or not np.isfinite(p).all():
            raise InvalidObservation(f"prefix must hold at most {spec.chunk_size} finite actions; got {len(p)}")
        n_prefix = len(p)
    if not isinstance(obs.delay, int) or not 0 <= obs.delay <= n_prefix:
        raise InvalidObservation(f"delay must be an integer in [0, len(prefix)={n_prefix}], got {obs.delay!r}")


def check_actions(actions: Any, spec: PolicySpec) -> np.ndarray:
    """The chunk a policy returned, or `PolicyFailed` if it is not a finite float32 (chunk_size, A) array."""
    expected = (spec.chunk_size, len(spec.action_names))
    if not isinstance(actions, np.ndarray) or actions.dtype != np.float32 or actions.shape != expected:
        raise PolicyFailed(f"policy returned {_describe(actions)}; its spec says float32 of shape {expected}")
    if not np.isfinite(actions).all():
        raise PolicyFailed("policy returned NaN or infinite actions")
    return actions


def _describe(a: Any) -> str:
    return f"{a.dtype} of shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__

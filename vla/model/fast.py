"""FAST action tokens (pi0-FAST): a chunk of normalised actions as a short sequence of discrete tokens.

A chunk (H steps, A dimensions) goes through an orthonormal DCT-II along time, one per dimension; the
coefficients are scaled by `scale`, rounded and clipped to [-CLIP, CLIP], and read out lowest frequency first
(every dimension's coefficient 0, then every dimension's coefficient 1, ...), so a smooth chunk ends in a long run
of zeros. Byte-pair encoding, fitted on the training data's chunks (`FastTokenizer.fit`), then merges frequent runs:
16 x 6 coefficients become about 20 tokens. The BPE model is the `tokenizers` library's, stored as its JSON (never
pickled), with each coefficient value written as one character.

`encode` gives each chunk's token ids followed by an end token (id `eos`), padded to the batch's longest;
`decode` inverts it up to the rounding (an action error of at most 0.5 / scale per coefficient).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import cache

import numpy as np
import torch
from tokenizers import Tokenizer, models, trainers
from torch.nn.utils.rnn import pad_sequence

CLIP = 127  # coefficients beyond +-CLIP (after scaling) are clipped; an alphabet of 2 * CLIP + 1 values
FIRST_CHAR = 0x100  # coefficient -CLIP is written as this character, -CLIP + 1 as the next, ...


@cache  # built once per chunk length, not on every training step
def dct_matrix(n: int) -> torch.Tensor:
    """(n, n) orthonormal DCT-II: coefficients = M @ signal, signal = M.T @ coefficients (read-only)."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    m = torch.cos(math.pi * (i + 0.5) * k / n) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m.float()


def quantise(chunks: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, H, A) normalised actions -> (N, H * A) int64 coefficients, frequency-major, in [-CLIP, CLIP]."""
    coef = torch.einsum("kh,nha->nka", dct_matrix(chunks.shape[1]).to(chunks.device), chunks.float())
    return (coef * scale).round().clamp(-CLIP, CLIP).to(torch.int64).flatten(1)


def dequantise(values: torch.Tensor, horizon: int, scale: float) -> torch.Tensor:
    """(N, H * A) coefficients -> (N, H, A) actions (the inverse DCT of the unscaled coefficients)."""
    coef = values.float().view(values.shape[0], horizon, -1) / scale
    return torch.einsum("kh,nka->nha", dct_matrix(horizon).to(values.device), coef)


def to_text(values: Iterable[int]) -> str:
    return "".join(chr(FIRST_CHAR + CLIP + int(v)) for v in values)


def from_text(text: str) -> list[int]:
    return [ord(c) - FIRST_CHAR - CLIP for c in text]


class FastTokenizer:
    """DCT + BPE tokens of action chunks (module docstring). Ids 0..vocab-1 are BPE tokens, `eos` ends a chunk."""

    def __init__(self, bpe_json: str, scale: float) -> None:
        self.bpe = Tokenizer.from_str(bpe_json)
        self.scale = scale
        self.eos = self.bpe.get_vocab_size()

    @property
    def vocab_size(self) -> int:
        """Token ids the model must embed and predict: the BPE vocabulary and the end token."""
        return self.eos + 1

    @classmethod
    def fit(cls, chunks: torch.Tensor, vocab_size: int, scale: float) -> FastTokenizer:
        """Fit BPE on (N, H, A) normalised training chunks; `vocab_size` counts the 2 * CLIP + 1 single values."""
        alphabet = 2 * CLIP + 1
        if vocab_size <= alphabet:
            raise ValueError(f"FAST vocab_size={vocab_size} must exceed the {alphabet} single coefficient values")
        if len(chunks) == 0:
            raise ValueError("FAST tokenizer: no action chunks to fit on")
        bpe = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[],
                                      initial_alphabet=[chr(FIRST_CHAR + i) for i in range(alphabet)])  # fmt: skip
        bpe.train_from_iterator([to_text(row) for row in quantise(chunks, scale).tolist()], trainer)
        return cls(bpe.to_str(), scale)

    def to_json(self) -> str:
        return str(self.bpe.to_str())

    def encode(self, chunks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, A) normalised chunks -> ids (B, T) int64 (each row ends with `eos`, then padding) and their
        validity (B, T) bool."""
        texts = [to_text(row) for row in quantise(chunks.detach().cpu(), self.scale).tolist()]
        rows = [torch.tensor([*enc.ids, self.eos]) for enc in self.bpe.encode_batch(texts)]
        ids = pad_sequence(rows, batch_first=True, padding_value=self.eos)
        valid = torch.arange(ids.shape[1])[None, :] < torch.tensor([len(row) for row in rows])[:, None]
        return ids.to(chunks.device), valid.to(chunks.device)

    def decode(self, ids: list[list[int]], horizon: int, action_dim: int) -> torch.Tensor:
        """Token ids (each row up to its `eos`) -> (B, horizon, action_dim) chunks. A row whose coefficients are
        too few is padded with zeros (high frequencies), too many cut: a model's guess always decodes."""
        n = horizon * action_dim
        rows = []
        for row in ids:
            row = row[: row.index(self.eos)] if self.eos in row else row
            values = from_text("".join(self.bpe.id_to_token(i) or "" for i in row))[:n]
            rows.append(values + [0] * (n - len(values)))
        return dequantise(torch.tensor(rows, dtype=torch.int64), horizon, self.scale)


def chunks_from_episodes(actions: np.ndarray, episodes: np.ndarray, horizon: int, stride: int) -> np.ndarray:
    """(N, A) actions with their episode index -> (M, horizon, A) chunks starting every `stride` frames of each
    episode; a chunk running past its episode's end repeats the last action (as LeRobot pads a chunk)."""
    out = []
    for episode in np.unique(episodes):
        rows = actions[episodes == episode]
        starts = np.arange(0, len(rows), stride)
        index = np.minimum(starts[:, None] + np.arange(horizon)[None, :], len(rows) - 1)
        out.append(rows[index])
    return np.concatenate(out) if out else np.zeros((0, horizon, actions.shape[-1]), actions.dtype)

"""Language tokenizers for the VLA: the VLM's own, a word vocabulary built from the dataset's tasks, or bytes.

* `PretrainedTokenizer` ("vlm"): the tokenizer that ships with a VLM (`vlm_path`), through transformers.
* `WordTokenizer` ("words"): one id per word of the training dataset's instructions, lower-cased, punctuation
  split off; PAD=0, BOS=1, EOS=2, UNK=3, then the words in sorted order. For a policy trained from scratch this
  is what lets it learn language from a few hundred demonstrations: "red" is one token whose embedding the
  loss shapes directly, where bytes would first have to be composed into it. The vocabulary is stored in the
  policy's config and processor, so a checkpoint loads anywhere, offline; a word outside it becomes UNK.
* `ByteTokenizer` ("bytes"): UTF-8 bytes as ids 3..258 after PAD=0, BOS=1, EOS=2; complete (any string
  encodes) and file-free.

All return token ids (B, L) int64 and a mask (B, L) bool, padded on the right to the longest sequence in the
batch. None truncates: an instruction longer than `max_length` tokens is an error that names it, since a cut
instruction is a different instruction ("pick up the red cube and put it in the bo").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

import torch

BYTE_VOCAB_SIZE = 262  # PAD, BOS, EOS, 256 bytes, and 3 spare ids
TOKENIZERS = ("vlm", "words", "bytes")
_WORD = re.compile(r"[^\W_]+|[^\w\s]", re.UNICODE)


class Tokenizer(Protocol):
    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]: ...


class InstructionTooLong(ValueError):
    pass


def _check_length(text: str, n_tokens: int, max_length: int) -> None:
    if n_tokens > max_length:
        raise InstructionTooLong(
            f"the instruction {text!r} is {n_tokens} tokens long, above --policy.tokenizer_max_length="
            f"{max_length}; shorten it or train with a larger tokenizer_max_length"
        )


def _pad(encoded: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), length), pad_id, dtype=torch.int64)
    mask = torch.zeros(len(encoded), length, dtype=torch.bool)
    for row, e in enumerate(encoded):
        ids[row, : len(e)] = torch.tensor(e, dtype=torch.int64)
        mask[row, : len(e)] = True
    return ids, mask


class ByteTokenizer:
    pad_id, bos_id, eos_id, offset = 0, 1, 2, 3

    def encode(self, text: str) -> list[int]:
        return [self.bos_id, *(b + self.offset for b in text.encode("utf-8")), self.eos_id]

    def decode(self, ids: list[int]) -> str:
        return bytes(i - self.offset for i in ids if i >= self.offset).decode("utf-8", errors="replace")

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = [self.encode(t) for t in texts]
        for text, e in zip(texts, encoded, strict=True):
            _check_length(text, len(e), max_length)
        return _pad(encoded, self.pad_id)


def split_words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def build_vocabulary(texts: Iterable[str]) -> list[str]:
    """The sorted distinct words of `texts` (the dataset's task strings)."""
    return sorted({word for text in texts for word in split_words(text)})


class WordTokenizer:
    pad_id, bos_id, eos_id, unk_id, offset = 0, 1, 2, 3, 4

    def __init__(self, vocabulary: list[str]) -> None:
        if not vocabulary:
            raise ValueError("a word tokenizer needs a vocabulary (the dataset's instructions gave none)")
        self.vocabulary = list(vocabulary)
        self.ids = {word: i + self.offset for i, word in enumerate(self.vocabulary)}

    @property
    def vocab_size(self) -> int:
        return self.offset + len(self.vocabulary)

    def encode(self, text: str) -> list[int]:
        return [self.bos_id, *(self.ids.get(w, self.unk_id) for w in split_words(text)), self.eos_id]

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.vocabulary[i - self.offset] if i >= self.offset else "<unk>"
                        for i in ids if i >= self.unk_id)  # fmt: skip

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in split_words(text) if w not in self.ids]

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = [self.encode(t) for t in texts]
        for text, e in zip(texts, encoded, strict=True):
            _check_length(text, len(e), max_length)
        return _pad(encoded, self.pad_id)


class PretrainedTokenizer:
    """The tokenizer that ships with a VLM (local directory or hub id), through transformers."""

    def __init__(self, path: str) -> None:
        from transformers import AutoTokenizer

        self.inner = AutoTokenizer.from_pretrained(path)
        if self.inner.pad_token is None:
            self.inner.pad_token = self.inner.eos_token

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = [list(ids) for ids in self.inner(texts)["input_ids"]]  # once, unpadded; right-padded below
        for text, e in zip(texts, encoded, strict=True):
            _check_length(text, len(e), max_length)
        return _pad(encoded, int(self.inner.pad_token_id))


def default_kind(vlm_path: str | None) -> str:
    """The tokenizer when none was chosen (and for processors saved before the choice existed)."""
    return "vlm" if vlm_path else "bytes"


def load_tokenizer(kind: str, vlm_path: str | None = None, vocabulary: list[str] | None = None) -> Tokenizer:
    if kind == "vlm":
        if not vlm_path:
            raise ValueError("the 'vlm' tokenizer needs --policy.vlm_path")
        return PretrainedTokenizer(vlm_path)
    if kind == "words":
        return WordTokenizer(vocabulary or [])
    if kind == "bytes":
        return ByteTokenizer()
    raise ValueError(f"tokenizer {kind!r} is not one of {TOKENIZERS}")

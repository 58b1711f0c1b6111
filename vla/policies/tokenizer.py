"""Language tokenizers for the VLA: the VLM's own (pretrained path) or a byte tokenizer that needs no download.

The byte tokenizer maps UTF-8 bytes to ids 3..258 after PAD=0, BOS=1, EOS=2; it is complete (any string encodes)
and has no files, so a checkpoint built without a pretrained VLM loads anywhere, offline.
Both return the same thing: token ids (B, L) int64 and a mask (B, L) bool, padded on the right to the longest
sequence in the batch, truncated to `max_length`.
"""

from __future__ import annotations

from typing import Protocol

import torch

BYTE_VOCAB_SIZE = 262  # PAD, BOS, EOS, 256 bytes, and 3 spare ids


class Tokenizer(Protocol):
    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]: ...


class ByteTokenizer:
    pad_id, bos_id, eos_id, offset = 0, 1, 2, 3

    def encode(self, text: str) -> list[int]:
        return [self.bos_id, *(b + self.offset for b in text.encode("utf-8")), self.eos_id]

    def decode(self, ids: list[int]) -> str:
        return bytes(i - self.offset for i in ids if i >= self.offset).decode("utf-8", errors="replace")

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = [self.encode(t)[:max_length] for t in texts]
        length = max(len(e) for e in encoded)
        ids = torch.full((len(texts), length), self.pad_id, dtype=torch.int64)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        for row, e in enumerate(encoded):
            ids[row, : len(e)] = torch.tensor(e)
            mask[row, : len(e)] = True
        return ids, mask


class PretrainedTokenizer:
    """The tokenizer that ships with a VLM (local directory or hub id), through transformers."""

    def __init__(self, path: str) -> None:
        from transformers import AutoTokenizer

        self.inner = AutoTokenizer.from_pretrained(path)
        if self.inner.pad_token is None:
            self.inner.pad_token = self.inner.eos_token

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.inner(texts, max_length=max_length, truncation=True, padding="longest", padding_side="right",
                         return_tensors="pt")
        return out["input_ids"].to(torch.int64), out["attention_mask"].to(torch.bool)


def load_tokenizer(vlm_path: str | None) -> Tokenizer:
    return PretrainedTokenizer(vlm_path) if vlm_path else ByteTokenizer()

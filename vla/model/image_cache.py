"""Camera embeddings of training frames, kept across steps while the vision tower is frozen.

With a frozen VLM (the default with pretrained weights) and no random image augmentation, the embedding of a
training frame (vision tower + connector, `Backbone.embed_images`) is the same every time the frame is drawn, yet
an epoch-based trainer recomputes it each time. At the `smolvla` preset that is about 6 of the 7.8 s of a batch-8
step on a 2-core CPU. `ImageEmbeddingCache` keeps those embeddings:
  * keyed by a SHA-256 of each image's pixels, so it needs no frame index, works for any dataset, sampler or
    camera, and can never serve one image's embedding for another;
  * least recently used out first once `max_bytes` is held; entries live in CPU memory whatever the model's device;
  * emptied whenever a vision or connector weight changes or the compute dtype does (the `token` passed in).
Frames drawn with random augmentation never repeat: they only pass through (hashing a 512 px frame takes ~2 ms).
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch

logger = logging.getLogger(__name__)
NEVER_REPEATED = 10_000  # misses without one hit before the cache says it is useless (augmented frames)


def image_key(image: torch.Tensor) -> bytes:
    """A digest of one image's shape, dtype and pixels (a CPU tensor)."""
    image = image.contiguous()
    digest = hashlib.sha256(f"{tuple(image.shape)}{image.dtype}".encode())
    digest.update(image.view(torch.uint8).numpy().data)  # the raw bytes, whatever the dtype
    return digest.digest()


class ImageEmbeddingCache:
    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"an image embedding cache needs a positive size; got {max_bytes} bytes")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._token: Hashable = None
        self._warned = False

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def embed(self, cameras: list[torch.Tensor], compute: Callable[[list[torch.Tensor]], torch.Tensor],
              token: Hashable) -> torch.Tensor:  # fmt: skip
        """Embeddings of every image of `cameras` (each (B, 3, H, W)), in camera-major order: (N*B, T, D).

        `compute(subsets)` embeds the given images (one tensor per camera, possibly empty, same order) and is
        called once, for the images not held. `token` identifies the weights and dtype the entries were made with.
        """
        if token != self._token:
            self.clear()
            self._token = token
        keys = [image_key(image) for cam in cameras for image in cam.detach().cpu()]
        held = [self._entries.get(key) for key in keys]
        missing = [i for i, entry in enumerate(held) if entry is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if not self.hits and self.misses >= NEVER_REPEATED and not self._warned:
            self._warned = True
            logger.warning("image embedding cache: %d training images, none seen twice (random image augmentation "
                           "makes every frame new); --policy.image_cache_mb=0 turns the cache off", self.misses)
        hits = {i: entry for i, entry in enumerate(held) if entry is not None}
        for i in hits:
            self._entries.move_to_end(keys[i])  # recently used
        device = cameras[0].device
        if not missing:
            return torch.stack(list(hits.values())).to(device)
        b = cameras[0].shape[0]
        subsets = [cam[[i - c * b for i in missing if i // b == c]] for c, cam in enumerate(cameras)]
        fresh = compute(subsets)
        out = torch.empty(len(keys), *fresh.shape[1:], dtype=fresh.dtype, device=device)
        out[missing] = fresh
        if hits:
            out[list(hits)] = torch.stack(list(hits.values())).to(device=device, dtype=fresh.dtype)
        for row, i in zip(fresh.detach().cpu(), missing, strict=True):
            self._store(keys[i], row)
        return out

    def _store(self, key: bytes, embedding: torch.Tensor) -> None:
        if key in self._entries:  # the same image twice in one batch
            return
        size = embedding.numel() * embedding.element_size()
        if size > self.max_bytes:
            return
        while self.nbytes + size > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.nbytes -= old.numel() * old.element_size()
        self._entries[key] = embedding.clone()
        self.nbytes += size

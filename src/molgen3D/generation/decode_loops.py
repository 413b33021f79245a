"""The model drivers of decoding: they feed a `token_sampler.SlotSampler` one step of logits at a time.

- `run_with_cache`: a transformers causal LM with a KV cache. The batch keeps `slots`
  positions busy: when a sample finishes, the next pending prompt is prefilled on its own and
  its keys/values are written into the finished position's row of the cache (left-aligned to
  the current column, the rest of the row masked), so decoding never waits for the longest
  sample of a batch. Columns no position attends any more are cut off now and then.
- `run_without_cache`: a plain `logits_fn(input_ids)` forward over the whole sequence, for the
  training-time probe (the TorchTitan model has no cache); `slots` samples at a time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from molgen3D.generation.token_sampler import SlotSampler

_TRIM = 256
"""Dead columns on the left of the cache that trigger a trim (trimming copies the whole cache)."""


class _BufferLayer(DynamicLayer):
    """A cache layer that writes into preallocated buffers (capacity doubles) instead of concatenating the whole
    cache every step: the static-cache part of decoding, with the row edits refilling needs."""

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self._k = self._v = None
            self.length = 0
        need = self.length + key_states.shape[2]
        if self._k is None or need > self._k.shape[2]:
            self._resize(max(need, 2 * (self._k.shape[2] if self._k is not None else 128)), key_states)
        self._k[:, :, self.length : need] = key_states
        self._v[:, :, self.length : need] = value_states
        self.length = need
        self._views()
        return self.keys, self.values

    def _resize(self, capacity: int, like: torch.Tensor) -> None:
        shape = (like.shape[0], like.shape[1], capacity, like.shape[3])
        k, v = like.new_zeros(shape), like.new_zeros(shape)
        if self._k is not None:
            k[:, :, : self.length], v[:, :, : self.length] = self.keys, self.values
        self._k, self._v = k, v

    def _views(self) -> None:
        self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self._views()

    def grow_left(self, columns: int) -> None:
        """`columns` empty columns before the first one."""
        keys, values = self.keys, self.values
        self._resize(max(self._k.shape[2], self.length + columns), keys)
        self._k[:, :, :columns] = 0
        self._v[:, :, :columns] = 0
        self._k[:, :, columns : columns + self.length] = keys
        self._v[:, :, columns : columns + self.length] = values
        self.length += columns
        self._views()

    def trim_left(self, columns: int) -> None:
        """Drop the first `columns` columns."""
        self.length -= columns
        self._k[:, :, : self.length] = self._k[:, :, columns : columns + self.length].clone()
        self._v[:, :, : self.length] = self._v[:, :, columns : columns + self.length].clone()
        self._views()

    def write_rows(self, positions: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Rows `positions` become `keys`/`values` (right-aligned to the last column, zeros before)."""
        lead = self.length - keys.shape[2]
        self._k[positions, :, : self.length] = torch.cat(
            [keys.new_zeros((*keys.shape[:2], lead, keys.shape[3])), keys], 2
        )
        self._v[positions, :, : self.length] = torch.cat(
            [values.new_zeros((*values.shape[:2], lead, values.shape[3])), values], 2
        )


class _SlotCache(DynamicCache):
    """A `DynamicCache` of `_BufferLayer`s."""

    def __init__(self):
        super().__init__()
        self.layer_class_to_replicate = _BufferLayer


def _left_padded(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :] = torch.as_tensor(p, dtype=torch.long)
        mask[b, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


def _prefill(model, prompts, pad_id, cache=None):
    """(cache, mask, next positions, last logits) of left-padded `prompts`."""
    ids, mask = _left_padded(prompts, pad_id, model.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache() if cache is None else cache
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return out.past_key_values, mask, positions[:, -1] + 1, out.logits[:, -1, :]


def _insert(cache, mask, new_cache, new_mask, positions: torch.Tensor):
    """Write `new_cache`'s rows into `cache` at batch `positions`, ending at the current last column; the mask grows."""
    width, new_width = mask.shape[1], new_mask.shape[1]
    if new_width > width:
        for layer in cache.layers:
            layer.grow_left(new_width - width)
        mask = torch.cat([mask.new_zeros((mask.shape[0], new_width - width)), mask], dim=1)
        width = new_width
    for layer, new in zip(cache.layers, new_cache.layers):
        layer.write_rows(positions, new.keys, new.values)
    lead = width - new_width
    mask[positions] = torch.cat([new_mask.new_zeros((new_mask.shape[0], lead)), new_mask], dim=1)
    return mask


def _trim(cache, mask):
    """Cut the columns on the left that no position attends (when there are enough to pay for the copy)."""
    first = int(mask.argmax(dim=1).min())
    if first < _TRIM:
        return mask
    for layer in cache.layers:
        layer.trim_left(first)
    return mask[:, first:]


@torch.no_grad()
def run_with_cache(model, prompts: Sequence[Sequence[int]], sampler: SlotSampler, pad_id: int) -> None:
    """Decode every prompt (sampler row k = prompts[k]), `sampler.slots` at a time, refilling finished positions."""
    if not prompts:
        return
    pending = deque(range(len(prompts)))
    first = [pending.popleft() for _ in range(min(sampler.slots, len(prompts)))]
    cache, mask, next_pos, logits = _prefill(model, [prompts[r] for r in first], pad_id, _SlotCache())
    sampler.load(first)
    steps = 0
    while True:
        tokens, _ = sampler.step(logits)
        live = sampler.live.tolist()
        if not any(live) and not pending:
            return
        if any(live):
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            out = model(
                input_ids=tokens[:, None].to(model.device),
                attention_mask=mask,
                position_ids=next_pos[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            logits, next_pos = out.logits[:, -1, :], next_pos + 1
        free = [p for p, alive in enumerate(live) if not alive]
        if not free:
            steps += 1
            if steps % 64 == 0:
                mask = _trim(cache, mask)
            continue
        refill, drop = free[: len(pending)], free[len(pending) :]
        if refill:
            rows = [pending.popleft() for _ in refill]
            new_cache, new_mask, new_pos, new_logits = _prefill(model, [prompts[r] for r in rows], pad_id)
            index = torch.as_tensor(refill, dtype=torch.long, device=mask.device)
            mask = _insert(cache, mask, new_cache, new_mask, index)
            next_pos[index], logits[index] = new_pos, new_logits.to(logits.dtype)
            sampler.replace(refill, rows)
        if drop:
            keep = [p for p in range(len(live)) if p not in set(drop)]
            index = torch.as_tensor(keep, dtype=torch.long, device=mask.device)
            cache.batch_select_indices(index)
            mask, next_pos, logits = mask[index], next_pos[index], logits[index]
            sampler.keep(keep)
        mask = _trim(cache, mask)


@torch.no_grad()
def run_without_cache(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    prompts: Sequence[Sequence[int]],
    sampler: SlotSampler,
    pad_id: int,
    device: torch.device | str | None = None,
) -> None:
    """Decode with a full forward per step, `sampler.slots` prompts at a time; sequences are right-padded, so
    causal attention never sees the pad."""
    for start in range(0, len(prompts), sampler.slots):
        rows = list(range(start, min(start + sampler.slots, len(prompts))))
        seqs = [list(prompts[r]) for r in rows]
        sampler.load(rows)
        while sampler.any_live:
            width = max(map(len, seqs))
            batch = torch.full((len(seqs), width), pad_id, dtype=torch.long)
            for k, seq in enumerate(seqs):
                batch[k, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            logits = logits_fn(batch.to(device) if device is not None else batch)
            last = torch.as_tensor([len(s) - 1 for s in seqs], device=logits.device)
            tokens, _ = sampler.step(logits[torch.arange(len(seqs), device=logits.device), last].to(sampler.device))
            for seq, tok in zip(seqs, tokens.tolist()):
                seq.append(tok)

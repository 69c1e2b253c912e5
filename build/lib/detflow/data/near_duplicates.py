"""Near-duplicate images by perceptual hash, without comparing all pairs.

``imagehash.phash`` gives each image a 64-bit hash; two images are near-duplicates when the
Hamming distance of their hashes is at most ``max_distance``. Candidate pairs come from
multi-index hashing: the hash is cut into ``max_distance + 1`` chunks, and two hashes within
that distance must agree exactly on at least one chunk (pigeonhole), so only images sharing a
chunk value are compared. Near-duplicate pairs are merged into clusters with union-find.
"""

from __future__ import annotations

from collections import defaultdict

import imagehash
from PIL import Image

HASH_BITS = 64


def perceptual_hash(image: Image.Image) -> int:
    """64-bit DCT perceptual hash of an image (``imagehash.phash``) as an int."""
    return int(str(imagehash.phash(image, hash_size=8)), 16)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def near_duplicate_pairs(hashes: list[int], *, max_distance: int) -> list[tuple[int, int, int]]:
    """All index pairs ``(i, j, distance)`` with ``i < j`` and Hamming distance
    ``<= max_distance``, sorted; cost grows with the pairs sharing a chunk, not with n²."""
    if max_distance < 0:
        return []
    chunks = _chunk_masks(max_distance + 1)
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, value in enumerate(hashes):
        for k, (shift, mask) in enumerate(chunks):
            buckets[(k, (value >> shift) & mask)].append(index)
    found = {}
    for members in buckets.values():
        for a_pos, i in enumerate(members):
            for j in members[a_pos + 1 :]:
                if (i, j) not in found:
                    distance = hamming(hashes[i], hashes[j])
                    if distance <= max_distance:
                        found[(i, j)] = distance
    return sorted((i, j, d) for (i, j), d in found.items())


def clusters(count: int, pairs) -> list[int]:
    """Union-find over ``count`` items joined by ``pairs``; returns each item's root (the
    smallest index of its cluster)."""
    parent = list(range(count))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, *_ in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return [find(x) for x in range(count)]


def _chunk_masks(parts: int) -> list[tuple[int, int]]:
    parts = min(parts, HASH_BITS)
    bounds = [round(k * HASH_BITS / parts) for k in range(parts + 1)]
    return [(lo, (1 << (hi - lo)) - 1) for lo, hi in zip(bounds, bounds[1:], strict=False)]

import itertools
import random

import pytest

from detflow.data.near_duplicates import clusters, hamming, near_duplicate_pairs


@pytest.mark.parametrize("max_distance", [0, 3, 6])
def test_multi_index_search_equals_brute_force(max_distance):
    rng = random.Random(max_distance)
    base = [rng.getrandbits(64) for _ in range(150)]
    # plant near copies: flip up to 8 distinct bits of some hashes (they stay 64-bit)
    hashes = base + [
        h ^ sum(1 << bit for bit in rng.sample(range(64), rng.randint(0, 8))) for h in base[:100]
    ]
    expected = sorted(
        (i, j, hamming(hashes[i], hashes[j]))
        for i, j in itertools.combinations(range(len(hashes)), 2)
        if hamming(hashes[i], hashes[j]) <= max_distance
    )
    assert near_duplicate_pairs(hashes, max_distance=max_distance) == expected
    assert expected  # the planted copies make the test meaningful


def test_long_runs_of_one_chunk_value_pair_every_member():
    same_chunks = [0xFFFF_0000_0000_0000 | i for i in range(40)]  # 40 share 4 of 5 chunks
    hashes = [*same_chunks, 0, 1 << 63, (1 << 64) - 1]
    expected = sorted(
        (i, j, hamming(hashes[i], hashes[j]))
        for i, j in itertools.combinations(range(len(hashes)), 2)
        if hamming(hashes[i], hashes[j]) <= 4
    )
    assert near_duplicate_pairs(hashes, max_distance=4) == expected
    assert len(expected) > 300  # most of the 780 pairs of the 40
    assert near_duplicate_pairs(hashes[:1], max_distance=4) == []


def test_clusters_are_transitive_and_rooted_at_smallest_index():
    assert clusters(6, [(4, 5, 1), (1, 4, 2), (2, 3, 0)]) == [0, 1, 2, 2, 1, 1]

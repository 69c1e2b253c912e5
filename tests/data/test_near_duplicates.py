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


def test_dct_hash_is_imagehash_phash_of_the_small_image(thermal_source):
    """The hash's DCT and bit order are imagehash's: on a 32 x 32 grayscale image (which
    phash does not resize) the two agree exactly."""
    import imagehash
    import numpy as np
    from PIL import Image

    from detflow.data.near_duplicates import dct_hash

    for path in sorted(thermal_source.rglob("*.jpg"))[:20]:
        small = Image.open(path).convert("L").resize((32, 32), Image.Resampling.LANCZOS)
        expected = int(str(imagehash.phash(small, hash_size=8)), 16)
        assert dct_hash(np.asarray(small, dtype=np.float64)) == expected, path.name


def test_perceptual_hash_stays_within_two_bits_of_imagehash(thermal_source):
    """The faster resize (``reducing_gap=3``) moves a hash by at most 2 bits here, and most
    hashes not at all."""
    import imagehash
    from PIL import Image

    from detflow.data.near_duplicates import perceptual_hash

    distances = []
    for path in sorted(thermal_source.rglob("*.jpg"))[:60]:
        image = Image.open(path)
        reference = int(str(imagehash.phash(image, hash_size=8)), 16)
        distances.append(hamming(perceptual_hash(image), reference))
    assert max(distances) <= 2
    assert distances.count(0) >= 0.8 * len(distances)

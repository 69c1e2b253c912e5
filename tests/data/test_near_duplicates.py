import itertools
import random

import numpy as np
import pytest
from PIL import Image

from detflow.data.near_duplicates import (
    ORIENTATIONS,
    clusters,
    dct_hash,
    dihedral_hashes,
    dihedral_pairs,
    dihedral_perceptual_hashes,
    hamming,
    near_duplicate_pairs,
    perceptual_hash,
)

# ORIENTATIONS in order, as PIL transposes of an image and as NumPy ops on a [rows, cols] array
TRANSPOSES = [None, *(getattr(Image.Transpose, name.upper()) for name in ORIENTATIONS[1:])]
ARRAY_OPS = [
    lambda a: a,
    lambda a: a[:, ::-1],
    lambda a: a[::-1],
    lambda a: np.rot90(a, 2),
    lambda a: a.T,
    lambda a: np.rot90(a),
    lambda a: np.rot90(a, -1),
    lambda a: np.rot90(a, 2).T,
]


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


def test_dihedral_hashes_are_the_hashes_of_the_transformed_arrays():
    """Sign changes and a transpose of one DCT block give exactly the hash of each flipped or
    turned 32 x 32 array (and the op list matches PIL's transposes)."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        small = rng.uniform(0, 255, (8, 8)).astype(np.uint8)
        pixels = np.asarray(Image.fromarray(small).resize((32, 32), Image.BILINEAR), np.float64)
        derived = dihedral_hashes(pixels)
        assert derived[0] == dct_hash(pixels)
        actual = [dct_hash(np.ascontiguousarray(op(pixels))) for op in ARRAY_OPS]
        assert list(derived) == actual
        assert len(set(derived)) == 8  # a random image: 8 different hashes
    image = Image.fromarray(rng.integers(0, 255, (5, 7), dtype=np.uint8))
    for op, transpose in zip(ARRAY_OPS[1:], TRANSPOSES[1:], strict=True):
        assert np.array_equal(np.asarray(image.transpose(transpose)), op(np.asarray(image)))


def test_dihedral_hashes_are_within_two_bits_of_hashing_the_turned_image(thermal_source):
    """On real photos the resize of a turned image differs from the turned resize by
    rounding only (Pillow reduces from the top-left corner): measured at most 2 bits."""
    paths = sorted(thermal_source.glob("*/images/*.jpg"))[:12]
    distances = []
    for path in paths:
        with Image.open(path) as opened:
            gray = opened.convert("L")
        derived = dihedral_perceptual_hashes(gray)
        assert derived[0] == perceptual_hash(gray)
        for k, transpose in enumerate(TRANSPOSES[1:], 1):
            distances.append(hamming(derived[k], perceptual_hash(gray.transpose(transpose))))
    assert max(distances) <= 2 and len(distances) == 7 * len(paths)


def test_dihedral_pairs_find_every_turned_copy_and_name_its_orientation():
    rng = random.Random(1)
    images = [np.array(rng.choices(range(256), k=32 * 32), np.float64).reshape(32, 32)]
    images += [np.ascontiguousarray(op(images[0])) for op in ARRAY_OPS[1:]]
    images.append(np.full((32, 32), 7.0) + np.arange(32))  # unrelated: a ramp
    hashes = [dihedral_hashes(a) for a in images]
    pairs = dihedral_pairs(hashes, max_distance=0)
    assert [(i, j) for i, j, *_ in pairs] == list(itertools.combinations(range(8), 2))
    assert [o for i, j, _, o in pairs if i == 0] == list(ORIENTATIONS[1:])
    assert all(d == 0 for *_, d, _ in pairs)
    by_pair = {(i, j): o for i, j, _, o in pairs}  # j made from i: rotate_90 of rotate_270
    assert by_pair[(5, 6)] == "rotate_180" and by_pair[(1, 2)] == "rotate_180"


@pytest.mark.parametrize("max_distance", [0, 4])
def test_dihedral_pairs_keep_the_upright_pairs_and_equal_brute_force(max_distance):
    rng = random.Random(max_distance)
    base = [tuple(rng.getrandbits(64) for _ in range(8)) for _ in range(120)]
    noisy = [
        tuple(h ^ (1 << rng.randrange(64)) for h in (b[3], *b[1:3], b[0], *b[4:]))
        for b in base[:40]
    ]  # upright hash = another's rotate_180 hash, one bit off
    hashes = base + noisy
    brute = {}
    for i, j in itertools.combinations(range(len(hashes)), 2):
        found = [(hamming(hashes[i][o], hashes[j][0]), o) for o in range(8)]
        found += [
            (hamming(hashes[j][o], hashes[i][0]), (0, 1, 2, 3, 4, 6, 5, 7)[o]) for o in range(8)
        ]
        best = min(found)
        if best[0] <= max_distance:
            brute[(i, j)] = best
    expected = [(i, j, d, ORIENTATIONS[o]) for (i, j), (d, o) in sorted(brute.items())]
    assert dihedral_pairs(hashes, max_distance=max_distance) == expected
    upright = near_duplicate_pairs([h[0] for h in hashes], max_distance=max_distance)
    assert {(i, j) for i, j, _ in upright} <= {(i, j) for i, j, *_ in expected}
    assert len(expected) >= 40 if max_distance else len(expected) < 40

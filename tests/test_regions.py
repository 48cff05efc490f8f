"""Region masks on real photographs (scikit-image bundles them offline) with the offline Haar backend,
plus input formats, post-processing against independent references, and the per-file cache."""
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

skimage_data = pytest.importorskip("skimage.data")

from gie_core.regions import MaskCache, region_mask  # noqa: E402

# Located by eye on skimage.data.astronaut() (512x512, Eileen Collins), as (row, col):
# eyes, nose tip, mouth, chin, forehead, both cheeks. Independent of the detector.
ASTRONAUT_FACE_POINTS = [(101, 202), (103, 247), (127, 225), (147, 223), (173, 225), (82, 223),
                         (130, 189), (130, 261)]
# Clearly not face: flag, suit patch, helmet, shuttle model, top-left wall, neck ring.
ASTRONAUT_NON_FACE_POINTS = [(60, 30), (380, 170), (420, 400), (150, 400), (10, 10), (230, 140)]
# Photographs with no human face in them (checked by looking: a coffee cup, a cat, a rocket on its pad,
# the moon's surface, a clock, a brick wall, a Hubble deep field, a micrograph, a colour wheel).
FACELESS = ["coffee", "chelsea", "rocket", "moon", "clock", "brick", "hubble_deep_field",
            "immunohistochemistry", "colorwheel"]


@pytest.fixture(scope="module")
def astronaut():
    return skimage_data.astronaut()


def _covers(mask, points, scale=1.0):
    return [float(mask[round(r * scale), round(c * scale)]) for r, c in points]


def test_astronaut_face_is_covered_and_nothing_else(astronaut):
    mask, info = region_mask(astronaut, return_info=True)
    assert mask.shape == (1, 512, 512) and mask.dtype == torch.float32
    assert info.found == [True] and info.num_empty == 0 and len(info.boxes[0]) == 1
    m = mask[0].numpy()
    assert min(_covers(m, ASTRONAUT_FACE_POINTS)) == 1.0
    assert max(_covers(m, ASTRONAUT_NON_FACE_POINTS)) == 0.0
    frac = m.mean()
    assert 0.01 < frac < 0.10, frac  # a face, not most of the image
    rows, cols = np.nonzero(m)
    # the whole mask stays around the head: from the hair to just below the chin
    assert rows.min() > 40 and rows.max() < 200 and cols.min() > 160 and cols.max() < 290
    assert ndimage.label(m > 0)[1] == 1


@pytest.mark.parametrize("name", FACELESS)
def test_faceless_photographs_give_empty_masks(name):
    img = getattr(skimage_data, name)()
    mask, info = region_mask(img, return_info=True)
    assert mask.shape == (1, *img.shape[:2])
    assert info.found == [False] and info.num_empty == 1
    assert float(mask.abs().sum()) == 0.0


def test_lfw_faces_found_and_lfw_background_crops_empty():
    """scikit-image's LFW subset: 100 face crops, then 100 background crops from the same photos
    (per its docstring). Crops are 25 px, so each is enlarged with replicated border for context."""
    import cv2

    crops = skimage_data.lfw_subset()
    batch = np.stack([cv2.copyMakeBorder(cv2.resize((c * 255).astype(np.uint8), (96, 96),
                                                    interpolation=cv2.INTER_CUBIC), 48, 48, 48, 48,
                                         cv2.BORDER_REPLICATE) for c in crops])
    masks, info = region_mask(batch[..., None], return_info=True)
    faces, background = np.array(info.found[:100]), np.array(info.found[100:])
    assert faces.mean() >= 0.9, faces.mean()
    assert background.mean() <= 0.05, background.mean()
    assert info.num_empty == (~faces).sum() + (~background).sum()
    # where a face is found the mask covers the crop's centre (the nose), not the border
    centre = masks[:100, 96, 96].numpy()[faces]
    assert (centre == 1).all() and masks[:100, :10, :10].sum() == 0


def test_batch_counts_images_without_region(astronaut):
    coffee = np.asarray(Image.fromarray(skimage_data.coffee()).resize((512, 512)))
    batch = torch.from_numpy(np.stack([coffee, astronaut, coffee])).float() / 255.0
    mask, info = region_mask(batch, return_info=True)
    assert mask.shape == (3, 512, 512)
    assert info.found == [False, True, False] and info.num_empty == 2
    assert mask[0].sum() == 0 and mask[2].sum() == 0 and mask[1].sum() > 1000


def test_two_faces_two_ellipses(astronaut):
    both = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)  # the second face mirrored
    mask, info = region_mask(both, return_info=True)
    m = mask[0].numpy()
    assert len(info.boxes[0]) == 2 and ndimage.label(m > 0)[1] == 2
    assert min(_covers(m, ASTRONAUT_FACE_POINTS)) == 1.0
    assert min(float(m[r, 1023 - c]) for r, c in ASTRONAUT_FACE_POINTS) == 1.0


@pytest.mark.parametrize("side", [256, 1024])
def test_face_found_at_other_sizes(astronaut, side):
    img = np.asarray(Image.fromarray(astronaut).resize((side, side), Image.BILINEAR))
    m = region_mask(img)[0].numpy()
    s = side / 512
    assert min(_covers(m, ASTRONAUT_FACE_POINTS, s)) == 1.0
    assert max(_covers(m, ASTRONAUT_NON_FACE_POINTS, s)) == 0.0


def test_profile_cascade_option_keeps_results_on_real_images(astronaut):
    m = region_mask(astronaut, profile=True)[0].numpy()
    assert min(_covers(m, ASTRONAUT_FACE_POINTS)) == 1.0
    for name in ("coffee", "chelsea", "rocket"):
        assert region_mask(getattr(skimage_data, name)(), profile=True).sum() == 0


# ---------------------------------------------------------------- input formats

def _formats(rgb):
    f = rgb.astype(np.float32) / 255.0
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 128, np.uint8)], axis=2)
    return {
        "numpy uint8 HWC": rgb,
        "numpy float HWC": f,
        "torch BHWC": torch.from_numpy(f)[None],
        "torch HWC": torch.from_numpy(f),
        "torch float16 BHWC": torch.from_numpy(f)[None].half(),
        "PIL RGB": Image.fromarray(rgb),
        "PIL RGBA": Image.fromarray(rgba),
        "numpy RGBA": rgba,
        "list of PIL": [Image.fromarray(rgb)],
    }


def test_input_formats_agree(astronaut):
    ref = region_mask(astronaut)
    for name, x in _formats(astronaut).items():
        got = region_mask(x)
        assert got.shape == ref.shape, name
        assert torch.equal(got, ref), name


def test_grayscale_inputs_find_the_face(astronaut):
    gray = np.asarray(Image.fromarray(astronaut).convert("L"))
    for x in (gray, gray[..., None], Image.fromarray(gray), torch.from_numpy(gray[None, ..., None] / 255.0),
              np.stack([gray, np.full_like(gray, 255)], axis=2)):  # gray+alpha
        m = region_mask(x)[0].numpy()
        assert min(_covers(m, ASTRONAUT_FACE_POINTS)) == 1.0


def test_file_path_input(astronaut, tmp_path):
    p = tmp_path / "a.png"
    Image.fromarray(astronaut).save(p)
    assert torch.equal(region_mask(str(p)), region_mask(astronaut))


@pytest.mark.parametrize("bad, words", [
    (np.zeros((2, 8, 8, 8, 3), np.uint8), "images"),
    (np.zeros((1, 8, 8, 7), np.uint8), "images"),
    (np.zeros((8, 8, 9), np.float32), "images"),
    (np.full((8, 8, 3), 200.0, np.float32), "0..1"),
    (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
    (torch.zeros(0, 8, 8, 3), "empty"),
    ([], "empty"),
    (42, "int"),
    ("/no/such/image.png", "does not exist"),
    (np.zeros((8, 8, 3), np.complex64), "dtype"),
])
def test_bad_input_names_the_input(bad, words):
    with pytest.raises(ValueError, match="image") as e:
        region_mask(bad)
    assert words in str(e.value)


def test_mixed_sizes_and_bad_options_are_rejected():
    a, b = np.zeros((32, 32, 3), np.uint8), np.zeros((32, 40, 3), np.uint8)
    with pytest.raises(ValueError, match="same size|one size"):
        region_mask([a, b])
    with pytest.raises(ValueError, match="feather"):
        region_mask(a, feather=-1)
    with pytest.raises(ValueError, match="min_area"):
        region_mask(a, min_area=-5)
    with pytest.raises(ValueError, match="backend"):
        region_mask(a, backend="yolo")
    with pytest.raises(ValueError, match="region"):
        region_mask(a, region="face++hair")
    with pytest.raises(ValueError, match="face_parsing"):
        region_mask(a, region="face+hair", backend="haar")
    with pytest.raises(ValueError, match="model"):
        region_mask(a, region="person")  # auto without a model folder cannot find people
    with pytest.raises(ValueError, match="haar"):
        region_mask(a, face_crops=False)  # a face-parser option given to the Haar backend


# ---------------------------------------------------------------- post-processing

class FixedDetector:
    """A stand-in detector returning a given boolean mask, to test post-processing exactly."""

    name = "fixed"

    def __init__(self, mask):
        self.mask = mask

    def check_region(self, parts):
        return None

    def detect(self, images, parts):
        return [self.mask.copy() for _ in images], None


def _blobs():
    m = np.zeros((64, 80), bool)
    m[10:30, 10:35] = True  # 500 px
    m[45:50, 60:64] = True  # 20 px
    return m


def test_dilate_and_erode_match_euclidean_distance():
    m = _blobs()
    img = np.zeros((64, 80, 3), np.uint8)
    outside = ndimage.distance_transform_edt(~m)
    inside = ndimage.distance_transform_edt(m)
    for r in (1, 3, 6):
        grown = region_mask(img, model=FixedDetector(m), dilate=r)[0].numpy() > 0.5
        # a disc kernel: everything within r is in, nothing beyond r+1 (pixel discs are not exact)
        assert grown[outside <= r].all() and not grown[outside > r + 1].any()
        shrunk = region_mask(img, model=FixedDetector(m), dilate=-r)[0].numpy() > 0.5
        assert shrunk[inside > r + 1].all() and not shrunk[inside <= r].any()


def test_radii_wider_than_the_image_are_instant_and_exact():
    """Past the image's diagonal a disc covers everything, so grow() answers without OpenCV (whose
    (2r+1)^2 kernel took ~80 s for --dilate -1000 on 512x512); the answer must agree with OpenCV's own
    disc morphology (checked on a small image, where OpenCV is quick)."""
    import cv2

    from gie_core.regions.postprocess import grow

    m = _blobs()[:20, :30]
    r = 37  # > hypot(20, 30) = 36.06
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    assert np.array_equal(grow(m, r), cv2.dilate(m.astype(np.uint8), disc).astype(bool))
    eroded = cv2.erode(m.astype(np.uint8), disc, borderType=cv2.BORDER_CONSTANT, borderValue=1).astype(bool)
    assert np.array_equal(grow(m, -r), eroded)
    assert grow(np.ones((20, 30), bool), -r).all()  # a region filling the image survives any shrink
    big = np.zeros((512, 512), bool)
    big[100:300, 100:300] = True
    assert not grow(big, -1000).any() and grow(big, 1000).all()  # (OpenCV took ~80 s for this erosion)


def test_feather_is_a_linear_ramp_centred_on_the_edge():
    m = _blobs()
    img = np.zeros((64, 80, 3), np.uint8)
    width = 8.0
    soft = region_mask(img, model=FixedDetector(m), feather=width)[0].numpy()
    # independent reference: scipy's exact Euclidean distance transforms
    signed = np.where(m, ndimage.distance_transform_edt(m) - 0.5, 0.5 - ndimage.distance_transform_edt(~m))
    ref = np.clip(0.5 + signed / width, 0, 1)
    assert np.abs(soft - ref).max() < 0.02
    assert soft.min() >= 0 and soft.max() <= 1
    assert (soft[m] >= 0.5).all() and (soft[~m] < 0.5).all()  # hard edge preserved at 0.5


def test_min_area_drops_small_regions_and_counts_empty():
    m = _blobs()
    img = np.zeros((64, 80, 3), np.uint8)
    kept, info = region_mask(img, model=FixedDetector(m), min_area=100, return_info=True)
    assert info.found == [True]
    assert np.array_equal(kept[0].numpy() > 0, ndimage.binary_opening(m, np.ones((6, 6))) & m)
    none, info = region_mask(img, model=FixedDetector(m), min_area=1000, dilate=4, feather=3, return_info=True)
    assert info.found == [False] and info.num_empty == 1 and none.sum() == 0


def test_output_stays_on_input_device_and_in_range(astronaut):
    x = torch.from_numpy(astronaut).float()[None] / 255
    m = region_mask(x, dilate=5, feather=9)
    assert m.device == x.device and torch.isfinite(m).all() and m.min() >= 0 and m.max() <= 1
    assert 0 < (m[0] - (m[0] > 0.999).float()).abs().sum()  # some soft values exist


# ---------------------------------------------------------------- cache

def test_mask_cache_per_file(astronaut, tmp_path):
    p = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(p)
    cache = MaskCache(tmp_path / "cache")
    first = cache.get(p, dilate=2)
    assert cache.misses == 1 and cache.hits == 0
    assert torch.equal(first, region_mask(astronaut, dilate=2)[0])
    again = cache.get(str(p), dilate=2)
    assert cache.hits == 1 and torch.equal(again, first)
    assert len(list((tmp_path / "cache").glob("*/*.npz"))) == 1
    # other options, an already-decoded (resized) image, and an edited file are all misses
    cache.get(p, dilate=4)
    small = np.array(Image.fromarray(astronaut).resize((256, 256)))
    m_small = cache.get(p, torch.from_numpy(small)[None].float() / 255, dilate=2)
    assert m_small.shape == (256, 256) and cache.misses == 3
    feathered, found = cache.get_with_info(p, feather=6)
    assert found and 0 < feathered.mean() < 1
    assert torch.allclose(cache.get(p, feather=6), feathered, atol=1e-3)  # soft masks stored as float16
    Image.fromarray(skimage_data.coffee()).save(p)  # same path, new content
    m, found = cache.get_with_info(p, dilate=2)
    assert not found and m.sum() == 0 and m.shape == (400, 600)
    # a corrupted entry is recomputed, not an error
    for f in (tmp_path / "cache").glob("*/*.npz"):
        f.write_bytes(b"garbage")
    assert torch.equal(cache.get(p, dilate=2), m)
    assert cache.clear() >= 4


def test_result_repr_is_short():
    r = region_mask(np.zeros((32, 32, 3), np.uint8), return_info=True)[1]
    assert repr(r) == "RegionResult(masks=(1, 32, 32), found=[False], num_empty=1, backend='haar', region='face')"


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(4, 24), st.integers(4, 24))), st.floats(0.5, 9.0),
       st.integers(-3, 3), st.integers(0, 12))
def test_postprocess_matches_scipy_on_random_masks(m, width, grow_by, min_area):
    img = np.zeros(m.shape + (3,), np.uint8)
    out, info = region_mask(img, model=FixedDetector(m), dilate=grow_by, feather=width, min_area=min_area,
                            return_info=True)
    out = out[0].numpy()
    labels, n = ndimage.label(m, structure=np.ones((3, 3)))
    sizes = ndimage.sum(m, labels, range(1, n + 1))
    kept = np.isin(labels, 1 + np.flatnonzero(sizes >= max(min_area, 1)))
    assert info.found == [bool(kept.any())]
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    if not kept.any():
        assert out.sum() == 0
        return
    # the hard mask behind the feathering is the 0.5 level set; compare to scipy's grown/shrunk mask
    hard = out >= 0.5
    if grow_by > 0:
        d = ndimage.distance_transform_edt(~kept)
        assert hard[d <= grow_by].all() and not hard[d > grow_by + 1].any()
    elif grow_by < 0:
        # pixels outside the image count as region (erosion does not eat from the border): pad with
        # 10 px of region, then a ring of background that is farther than any tested radius
        padded = np.pad(np.pad(kept, 10, constant_values=True), 1, constant_values=False)
        d = ndimage.distance_transform_edt(padded)[11:-11, 11:-11]
        assert hard[d > -grow_by + 1].all() and not hard[(d <= -grow_by) & kept].any()
    else:
        assert np.array_equal(hard, kept)


def test_shared_detector_from_several_threads(astronaut):
    from concurrent.futures import ThreadPoolExecutor

    imgs = [astronaut, astronaut[:, ::-1].copy(), np.asarray(Image.fromarray(astronaut).resize((400, 400)))] * 2
    serial = [region_mask(im) for im in imgs]
    with ThreadPoolExecutor(3) as pool:
        threaded = list(pool.map(region_mask, imgs))
    assert all(torch.equal(a, b) for a, b in zip(serial, threaded))
    assert all(m.sum() > 1000 for m in serial)

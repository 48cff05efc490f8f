"""The learned region backends end to end on tiny random models saved to folders: loading from disk,
label selection (the classifier is biased so the right answer is known), combinations, shapes,
errors, the auto backend choice and the CLI."""
import numpy as np
import pytest
import torch
from PIL import Image

transformers = pytest.importorskip("transformers")

from gie_core.cli import main as cli_main  # noqa: E402
from gie_core.regions import detect_regions, load_detector, region_mask  # noqa: E402
from gie_core.regions.tiny import FACE_PARSING_LABELS, save_tiny_face_parser, save_tiny_mask2former  # noqa: E402


@pytest.fixture(scope="module")
def m2f_car(tmp_path_factory):
    d = tmp_path_factory.mktemp("m2f_car")
    save_tiny_mask2former(d, "car")
    return d


@pytest.fixture(scope="module")
def parser_hair(tmp_path_factory):
    d = tmp_path_factory.mktemp("parser_hair")
    save_tiny_face_parser(d, "hair")
    return d


IMG = np.random.default_rng(0).integers(0, 256, (2, 70, 90, 3), dtype=np.uint8)


def test_mask2former_label_selection(m2f_car):
    x = torch.from_numpy(IMG).float() / 255
    car, info = region_mask(x, region="label:car", model=m2f_car, return_info=True)
    assert info.backend == "mask2former" and car.shape == (2, 70, 90) and car.dtype == torch.float32
    assert bool((car == 1).all()) and info.num_empty == 0
    person, info = region_mask(x, region="person", model=str(m2f_car), return_info=True)
    assert person.sum() == 0 and info.found == [False, False] and info.num_empty == 2
    both = region_mask(x, region="person+car", backend="mask2former", model=m2f_car, feather=4)
    assert bool((both == 1).all())  # feathering a full mask leaves it full


def test_mask2former_other_favoured_label(tmp_path):
    save_tiny_mask2former(tmp_path, "dog")
    res = detect_regions(IMG[0], region="label:dog+sky", model=tmp_path)
    assert res.found == [True] and bool((res.masks == 1).all())
    assert region_mask(IMG[0], region="label:car", model=tmp_path).sum() == 0


def test_mask2former_unknown_label_lists_known_ones(m2f_car):
    with pytest.raises(ValueError, match="zebra") as e:
        region_mask(IMG, region="label:zebra", model=m2f_car)
    assert "person" in str(e.value) and "car" in str(e.value)
    with pytest.raises(ValueError, match="'face' is not known"):
        region_mask(IMG, region="face", model=m2f_car)  # COCO-style models have no face label


def test_face_parser_regions_and_combinations(parser_hair):
    det = load_detector("face_parsing", parser_hair, device="cpu")
    assert det.labels == list(FACE_PARSING_LABELS.values())
    hair, info = region_mask(IMG, region="hair", model=det, return_info=True)
    assert info.backend == "face_parsing" and hair.shape == (2, 70, 90) and bool((hair == 1).all())
    face, info = region_mask(IMG, region="face", model=parser_hair, return_info=True)
    assert face.sum() == 0 and info.num_empty == 2  # face = skin+nose+eyes+lips here, none favoured
    assert bool((region_mask(IMG, region="face+hair", model=parser_hair) == 1).all())
    assert region_mask(IMG, region="label:neck", model=parser_hair).sum() == 0
    with pytest.raises(ValueError, match="hat") as e:
        region_mask(IMG, region="label:hat", model=parser_hair)
    assert "skin" in str(e.value) and "hair" in str(e.value)


def test_face_parser_face_alias_uses_face_parts(tmp_path):
    save_tiny_face_parser(tmp_path, "nose")
    assert bool((region_mask(IMG, region="face", model=tmp_path) == 1).all())
    assert region_mask(IMG, region="hair", model=tmp_path).sum() == 0


def test_detector_is_loaded_once(parser_hair):
    assert load_detector("auto", parser_hair) is load_detector("face_parsing", parser_hair)


def test_bad_model_folders(tmp_path, m2f_car):
    with pytest.raises(ValueError, match="not a folder"):
        region_mask(IMG, region="person", model=tmp_path / "missing")
    with pytest.raises(ValueError, match="config.json"):
        region_mask(IMG, region="person", model=tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="bert"):
        region_mask(IMG, region="person", model=tmp_path)
    with pytest.raises(ValueError, match="mask2former"):
        region_mask(IMG, region="hair", backend="face_parsing", model=m2f_car)
    with pytest.raises(ValueError, match="model"):
        region_mask(IMG, region="person", backend="mask2former")  # no folder given


def test_cli_writes_masks_and_overlays(tmp_path, m2f_car):
    import skimage.data

    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(skimage.data.astronaut()).save(inp / "astronaut.png")
    Image.fromarray(skimage.data.coffee()).save(inp / "coffee.jpg")
    out = tmp_path / "out"
    assert cli_main(["mask", str(inp), "-o", str(out), "--overlay", "--dilate", "4"]) == 0
    face = np.asarray(Image.open(out / "astronaut_mask.png"))
    assert face.shape == (512, 512) and face[127, 225] == 255 and face[10, 10] == 0
    assert np.asarray(Image.open(out / "coffee_mask.png")).max() == 0
    over = np.asarray(Image.open(out / "astronaut_overlay.png"))
    assert over.shape == (512, 512, 3) and over[127, 225, 0] > over[127, 225, 1]
    assert cli_main(["mask", str(inp / "coffee.jpg"), "-o", str(out), "--region", "label:car",
                     "--model", str(m2f_car), "--suffix", "_car"]) == 0
    assert np.asarray(Image.open(out / "coffee_car.png")).min() == 255
    assert cli_main(["mask", str(tmp_path / "nope.png")]) == 2
    assert cli_main(["mask", str(inp), "-o", str(out), "--whole-image"]) == 2  # no face parser given
    assert cli_main(["mask", str(inp), "-o", str(out), "--profile", "--region", "person",
                     "--model", str(m2f_car)]) == 2
    assert cli_main(["mask", str(inp), "-o", str(out), "--region", "label:zebra", "--model", str(m2f_car)]) == 2


def test_face_parser_parses_face_crops(parser_hair):
    import skimage.data

    from gie_core.regions.haar import HaarFaceDetector

    astronaut = skimage.data.astronaut()
    hair, info = region_mask(astronaut, region="hair", model=parser_hair, return_info=True)
    m = hair[0].numpy()
    (box,) = HaarFaceDetector().boxes(astronaut)
    rows, cols = np.nonzero(m)
    # the parser (favouring hair everywhere) saw only a square crop around the face, ~2.2x the box
    side = 2.2 * box[2]
    assert abs((rows.max() - rows.min() + 1) - side) <= 2 and abs((cols.max() - cols.min() + 1) - side) <= 2
    assert m[127, 225] == 1 and m[10, 10] == 0 and m[500, 500] == 0 and info.boxes == [[box]]
    assert 0.1 < m.mean() < 0.3
    whole = region_mask(astronaut, region="hair", model=parser_hair, face_crops=False)
    assert bool((whole == 1).all())
    coffee = region_mask(skimage.data.coffee(), region="hair", model=parser_hair)  # no face: parsed whole
    assert bool((coffee == 1).all())
    with pytest.raises(ValueError, match="crop_context"):
        region_mask(astronaut, region="hair", model=parser_hair, crop_context=0.5)

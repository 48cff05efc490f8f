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

M2F_LABELS = {0: "person", 1: "car", 2: "sky", 3: "dog"}
FACE_LABELS = {0: "background", 1: "skin", 2: "nose", 3: "l_eye", 4: "r_eye", 5: "u_lip", 6: "hair", 7: "neck"}


def _processor(name):
    cls = getattr(transformers, name + "Pil", None) or getattr(transformers, name)
    return cls


def _save_mask2former(folder, favour: str):
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    torch.manual_seed(0)
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=backbone, num_labels=4, id2label=M2F_LABELS,
                            label2id={v: k for k, v in M2F_LABELS.items()}, hidden_dim=32, num_queries=8,
                            encoder_layers=1, decoder_layers=2, num_attention_heads=2, dim_feedforward=64,
                            mask_feature_size=32, feature_size=32, encoder_feedforward_dim=64,
                            use_auxiliary_loss=False)
    model = Mask2FormerForUniversalSegmentation(cfg).eval()
    with torch.no_grad():  # every query predicts `favour`: semantic inference labels every pixel with it
        model.class_predictor.weight.zero_()
        model.class_predictor.bias.fill_(-10.0)
        model.class_predictor.bias[{v: k for k, v in M2F_LABELS.items()}[favour]] = 10.0
    model.save_pretrained(folder)
    _processor("Mask2FormerImageProcessor")(size={"shortest_edge": 64, "longest_edge": 128},
                                            size_divisor=32).save_pretrained(folder)


def _save_face_parser(folder, favour: str):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    cfg = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                          num_attention_heads=[1, 1], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2],
                          decoder_hidden_size=16, num_labels=len(FACE_LABELS), id2label=FACE_LABELS,
                          label2id={v: k for k, v in FACE_LABELS.items()})
    model = SegformerForSemanticSegmentation(cfg).eval()
    with torch.no_grad():
        model.decode_head.classifier.weight.zero_()
        model.decode_head.classifier.bias.fill_(-5.0)
        model.decode_head.classifier.bias[{v: k for k, v in FACE_LABELS.items()}[favour]] = 5.0
    model.save_pretrained(folder)
    _processor("SegformerImageProcessor")(size={"height": 64, "width": 64}).save_pretrained(folder)


@pytest.fixture(scope="module")
def m2f_car(tmp_path_factory):
    d = tmp_path_factory.mktemp("m2f_car")
    _save_mask2former(d, "car")
    return d


@pytest.fixture(scope="module")
def parser_hair(tmp_path_factory):
    d = tmp_path_factory.mktemp("parser_hair")
    _save_face_parser(d, "hair")
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
    _save_mask2former(tmp_path, "dog")
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
    assert det.labels == list(FACE_LABELS.values())
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
    _save_face_parser(tmp_path, "nose")
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
    assert cli_main(["mask", str(inp), "-o", str(out), "--region", "label:zebra", "--model", str(m2f_car)]) == 2

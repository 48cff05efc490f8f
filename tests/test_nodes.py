"""The ComfyUI nodes without ComfyUI: the pure nodes on ComfyUI-shaped tensors, bad input to every
node, the hint block that replaces ComfyUI's input_hint_block, and the model-fit checks.

The pack is imported the way ComfyUI imports it (its root ``__init__.py`` as a package under a
path-like name), so these tests also prove that importing it needs no ComfyUI module.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "instructgie_pack_under_test"


def load_pack():
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(PACK_NAME, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


PACK = load_pack()
NODES = PACK.NODE_CLASS_MAPPINGS
Concat = NODES["InstructGIEVisualPromptConcatenate"]
Unifier = NODES["InstructGIEInstructionUnifier"]
FaceMask = NODES["InstructGIEFaceRegionMask"]
NodeInputError = sys.modules[PACK_NAME + ".nodes._checks"].NodeInputError


def rand_image(b=1, h=64, w=64, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((b, h, w, c), generator=g)


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------
def test_pack_registers_five_nodes_without_importing_comfyui():
    assert set(NODES) == {"InstructGIEVMambaControlNetLoader", "InstructGIEVisualPromptConcatenate",
                          "InstructGIEInstructionUnifier", "InstructGIEFaceRegionMask", "InstructGIESampler"}
    assert set(PACK.NODE_DISPLAY_NAME_MAPPINGS) == set(NODES)
    assert PACK.NODE_DISPLAY_NAME_MAPPINGS["InstructGIESampler"] == "InstructGIE Sampler"
    for cls in NODES.values():
        assert cls.CATEGORY == "InstructGIE"
        assert callable(getattr(cls, cls.FUNCTION))
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
    leaked = [m for m in sys.modules if m in ("nodes", "folder_paths", "comfy") or m.startswith("comfy.")]
    assert leaked == []


def test_display_names_say_which_pack_a_node_is_from():
    """Searching ComfyUI's node list for the pack's name finds every node."""
    assert all(name.startswith("InstructGIE ") for name in PACK.NODE_DISPLAY_NAME_MAPPINGS.values())


def test_face_mask_defaults_are_what_the_shipped_workflows_use():
    import json

    inputs = FaceMask.INPUT_TYPES()["required"]
    defaults = {k: inputs[k][1]["default"] for k in ("dilate", "feather")}
    used = [{k: node["inputs"][k] for k in defaults}
            for path in (ROOT / "api_workflows").glob("*_api.json") for node in json.loads(path.read_text()).values()
            if node["class_type"] == "InstructGIEFaceRegionMask"]
    assert len(used) >= 2 and all(u == defaults for u in used), (defaults, used)
    assert defaults == {"dilate": 8, "feather": 8}


@pytest.mark.parametrize("cls", [Concat, Unifier, FaceMask])
def test_every_input_of_the_pure_nodes_has_a_tooltip(cls):
    spec = cls.INPUT_TYPES()
    inputs = {**spec["required"], **spec.get("optional", {})}
    missing = [n for n, (_, opts) in inputs.items() if not opts.get("tooltip")]
    assert missing == []


# --------------------------------------------------------------------------------------------------
# Visual Prompt Concatenate
# --------------------------------------------------------------------------------------------------
def test_concatenate_lays_out_cells_exactly():
    before, after = rand_image(seed=1, h=64, w=64), rand_image(seed=2, h=64, w=64)
    query = rand_image(b=3, seed=3, h=64, w=64)
    grid, hint, mask, layout = Concat().concatenate(before, after, query, tile=64, resize="stretch")
    assert grid.shape == hint.shape == (3, 128, 128, 3) and mask.shape == (3, 128, 128)
    # Same-size inputs are placed unresampled: each cell is the input itself.
    for i in range(3):
        assert torch.equal(grid[i, :64, :64], before[0])
        assert torch.equal(grid[i, :64, 64:], after[0])
        assert torch.equal(grid[i, 64:, :64], query[i])
    assert torch.equal(hint[:, :, :, :][:, :64], grid[:, :64]) and torch.equal(hint[:, 64:, :64], grid[:, 64:, :64])
    assert torch.all(hint[:, 64:, 64:] == 0)
    expected_mask = torch.zeros(3, 128, 128)
    expected_mask[:, 64:, 64:] = 1
    assert torch.equal(mask, expected_mask)
    # The layout cuts the generated cell back out.
    edited = torch.rand(3, 64, 64, 3)
    filled = grid.clone()
    filled[:, 64:, 64:] = edited
    assert torch.equal(layout.crop(filled), edited)


def test_concatenate_optional_pairs_and_batch_sharing():
    imgs = [rand_image(seed=s, h=48, w=80) for s in range(6)]
    query = rand_image(b=2, seed=9, h=48, w=80)
    grid, hint, mask, layout = Concat().concatenate(imgs[0], imgs[1], query, tile=64, resize="fit",
                                                    example_before_2=imgs[2], example_after_2=imgs[3],
                                                    example_before_4=imgs[4], example_after_4=imgs[5])
    assert grid.shape == (2, 4 * 64, 128, 3)  # three pairs + the query row
    assert layout.num_examples == 3
    assert mask[:, 192:, 64:].min() == 1 and mask.sum() == 2 * 64 * 64
    assert torch.isfinite(grid).all() and 0 <= float(grid.min()) and float(grid.max()) <= 1
    # fit keeps the query's aspect: the crop is 64 wide, 48*64/80 ~ 38 high
    assert tuple(layout.crop(grid).shape) == (2, 38, 64, 3)
    assert tuple(layout.crop(grid, original_size=True).shape) == (2, 48, 80, 3)


def test_concatenate_accepts_rgba_and_gray():
    grid, *_ = Concat().concatenate(rand_image(c=4), rand_image(c=1), rand_image(), tile=64, resize="crop")
    assert grid.shape == (1, 128, 128, 3)


@pytest.mark.parametrize("kwargs, words", [
    (dict(example_before=rand_image(b=3), query=rand_image(b=2)), ["example_before", "batch of 3", "query"]),
    (dict(query=torch.rand(1, 1, 1, 3)), ["query", "1x1"]),
    (dict(example_after=torch.rand(1, 3, 64, 64)), ["example_after", "channels-last"]),
    (dict(query=torch.full((1, 64, 64, 3), float("nan"))), ["query", "NaN"]),
    (dict(query=torch.rand(1, 64, 64, 3) * 255), ["query", "0..1"]),
    (dict(tile=100), ["tile", "multiple of 64"]),
    (dict(tile=0), ["tile"]),
    (dict(resize="zoom"), ["resize", "fit"]),
    (dict(example_before="a picture"), ["example_before", "IMAGE"]),
    (dict(example_before_2=rand_image()), ["pair 2", "example_after_2"]),
    (dict(query=torch.rand(0, 64, 64, 3)), ["query", "empty"]),
])
def test_concatenate_bad_input_names_the_input(kwargs, words):
    args = dict(example_before=rand_image(), example_after=rand_image(), query=rand_image(), tile=64, resize="fit")
    args.update(kwargs)
    with pytest.raises(NodeInputError) as e:
        Concat().concatenate(**args)
    msg = str(e.value)
    assert msg.startswith("Visual Prompt Concatenate:")
    for w in words:
        assert w in msg


# --------------------------------------------------------------------------------------------------
# Instruction Unifier
# --------------------------------------------------------------------------------------------------
class FakeClip:
    """Records what a CLIP would be asked to encode (ComfyUI's CLIP API: tokenize / encode_from_tokens_scheduled)."""

    def __init__(self):
        self.texts = []

    def tokenize(self, text):
        self.texts.append(text)
        return {"l": [[(len(text), 1.0)]]}

    def encode_from_tokens_scheduled(self, tokens):
        return [[torch.ones(1, 77, 8) * tokens["l"][0][0][0], {"pooled_output": None}]]


def test_unifier_maps_paraphrases_to_one_instruction_and_is_idempotent():
    from gie_core.instruction import unify

    node = Unifier()
    a, cond, match = node.unify("Could you please paint the car red?", "rules")["result"]
    b, _, _ = node.unify("make the car red", "rules")["result"]
    assert "no instruction bank" in match
    assert cond is None
    assert a == unify("Could you please paint the car red?")
    assert a == b, "two phrasings of one edit must give one instruction"
    assert node.unify(a, "rules")["result"][0] == a


def test_unifier_encodes_the_unified_text_with_a_connected_clip():
    clip = FakeClip()
    text, cond, _ = Unifier().unify("  please paint the car red!! ", "rules", clip=clip)["result"]
    assert clip.texts == [text]  # the unified text is what gets encoded, not the raw one
    assert cond[0][0].shape == (1, 77, 8) and float(cond[0][0][0, 0, 0]) == len(text)


@pytest.mark.parametrize("kwargs, words", [
    (dict(text=""), ["text", "empty"]),
    (dict(text="   \n\t "), ["text", "empty"]),
    (dict(text=None), ["text", "string"]),
    (dict(text="x" * 5000), ["text", "5000"]),
    (dict(backend="gpt"), ["backend", "rules"]),
    (dict(backend="embedding"), ["bank"]),
    (dict(backend="llm"), ["llm_model"]),
    (dict(clip=object()), ["clip", "CLIP"]),
    (dict(text="please!!!"), ["no instruction"]),
])
def test_unifier_bad_input(kwargs, words):
    args = dict(text="make it snowy", backend="rules")
    args.update(kwargs)
    with pytest.raises(ValueError) as e:
        Unifier().unify(**args)
    msg = str(e.value)
    assert msg.startswith("Instruction Unifier:")
    for w in words:
        assert w in msg


# --------------------------------------------------------------------------------------------------
# Face-Region Mask
# --------------------------------------------------------------------------------------------------
def test_face_mask_is_the_library_mask_in_comfyui_shape():
    from gie_core.regions import region_mask

    image = rand_image(b=2, h=72, w=56, seed=4)
    (m,) = FaceMask().mask(image, "face", "auto", 3, 2)
    assert m.shape == (2, 72, 56) and m.dtype == torch.float32
    assert torch.equal(m, region_mask(image, region="face", backend="auto", dilate=3, feather=2))
    assert 0 <= float(m.min()) and float(m.max()) <= 1


def test_face_mask_custom_region_overrides_the_menu():
    from gie_core.regions import region_mask

    image = rand_image(b=1, h=48, w=48, seed=7)
    (m,) = FaceMask().mask(image, "hair", "haar", 0, 0, custom_region=" face ")
    assert torch.equal(m, region_mask(image, region="face", backend="haar"))
    with pytest.raises(ValueError, match="Face-Region Mask:"):
        FaceMask().mask(image, "face", "haar", 0, 0, custom_region="face++")


def test_face_mask_takes_rgba_and_gray_images():
    # ComfyUI images may carry alpha; the detector sees the RGB part (gray is repeated to RGB).
    from gie_core.regions import region_mask

    rgba = rand_image(b=1, h=64, w=64, c=4, seed=5)
    (m,) = FaceMask().mask(rgba, "face", "haar", 0, 0)
    assert torch.equal(m, region_mask(rgba[..., :3], backend="haar"))
    gray = rand_image(b=1, h=64, w=64, c=1, seed=6)
    (m,) = FaceMask().mask(gray, "face", "haar", 0, 0)
    assert m.shape == (1, 64, 64)


@pytest.mark.parametrize("kwargs, words", [
    (dict(image=torch.rand(1, 1, 1, 3)), ["image", "1x1"]),
    (dict(image=torch.rand(64, 64)), ["image", "IMAGE"]),
    (dict(image=torch.rand(1, 64, 64, 3) - 2), ["image", "0..1"]),
    (dict(region="tail"), ["region", "face"]),
    (dict(backend="yolo"), ["backend", "auto"]),
    (dict(dilate=-1), ["dilate"]),
    (dict(feather=10**6), ["feather"]),
    (dict(dilate=1.5), ["dilate", "integer"]),
    (dict(region="hair", backend="haar"), ["Face-Region Mask:"]),
    (dict(backend="mask2former", model_path="/nonexistent/model"), ["Face-Region Mask:"]),
])
def test_face_mask_bad_input(kwargs, words):
    args = dict(image=rand_image(), region="face", backend="auto", dilate=0, feather=0)
    args.update(kwargs)
    with pytest.raises(ValueError) as e:
        FaceMask().mask(**args)
    msg = str(e.value)
    assert msg.startswith("Face-Region Mask:")
    for w in words:
        assert w in msg


# --------------------------------------------------------------------------------------------------
# The hint block that replaces ComfyUI's input_hint_block, and the model-fit checks
# --------------------------------------------------------------------------------------------------
def tiny_hint_block(use_target_channel=False, context_dim=768):
    from gie_core.models import VMambaHintEncoder

    hint_block = sys.modules[PACK_NAME + ".nodes.hint_block"] if PACK_NAME + ".nodes.hint_block" in sys.modules \
        else importlib.import_module(PACK_NAME + ".nodes.hint_block")
    torch.manual_seed(0)
    enc = VMambaHintEncoder(dict(out_channels=16, dims=(8, 16), depths=(0, 1), use_target_channel=use_target_channel))
    torch.nn.init.normal_(enc.conv_out.weight, std=0.1)  # the zero init would hide wrong features
    return hint_block.VMambaHintBlock(enc.eval(), context_dim=context_dim, base="sd1"), enc


def test_hint_block_matches_the_encoder_and_caches_across_steps():
    block, enc = tiny_hint_block()
    hint = torch.rand(2, 3, 32, 48)
    context = torch.zeros(2, 77, 768)
    with torch.no_grad():
        want = enc.encode(hint)
        first = block(hint, None, context)
        second = block(hint.clone(), torch.zeros(2, 4), context)
    assert first.shape == (2, 16, 4, 6)
    torch.testing.assert_close(first, want)
    torch.testing.assert_close(second, want)
    assert enc.hint_cache.rows_reused >= 2, "the second step must reuse the first step's features"
    # Another dtype in, same dtype out (ComfyUI casts the hint to the ControlNet's dtype).
    with torch.no_grad():
        out64 = block(hint.double(), None, context.double())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), want)
    # Half precision in and out (ComfyUI on a GPU); the encoder itself runs in float32.
    with torch.no_grad():
        out16 = block(hint.half(), None, context.half())
    assert out16.dtype == torch.float16 and torch.isfinite(out16).all()
    torch.testing.assert_close(out16.float(), enc.encode(hint.half().float()), atol=2e-3, rtol=2e-3)


def test_hint_block_refuses_sdxl_text_features_with_an_actionable_message():
    block, _ = tiny_hint_block()
    with pytest.raises(ValueError) as e:
        block(torch.rand(1, 3, 32, 32), None, torch.zeros(1, 77, 2048))
    assert "SDXL" in str(e.value) and "SD1" in str(e.value) and "checkpoint" in str(e.value)


def test_hint_block_channel_errors():
    block, _ = tiny_hint_block(use_target_channel=True)
    with pytest.raises(ValueError, match="InstructGIE Sampler"):
        block(torch.rand(1, 3, 32, 32), None, None)
    block3, _ = tiny_hint_block()
    with pytest.raises(ValueError, match="5 channels"):
        block3(torch.rand(1, 5, 32, 32), None, None)


def test_sampler_adds_the_target_channel_only_for_controlnets_trained_with_it():
    sampler = importlib.import_module(PACK_NAME + ".nodes.sampler")
    hint, mask = torch.rand(1, 16, 16, 3), torch.zeros(2, 16, 16)
    mask[:, 8:, 8:] = 1
    plain, _ = tiny_hint_block()
    assert sampler.control_image_for(plain, hint, mask, 2) is hint
    with_mask, _ = tiny_hint_block(use_target_channel=True)
    img = sampler.control_image_for(with_mask, hint, mask, 2)
    assert img.shape == (2, 16, 16, 4)
    assert torch.equal(img[..., :3], hint.expand(2, -1, -1, -1)) and torch.equal(img[..., 3], mask)
    with torch.no_grad():  # ComfyUI hands the image channels-first to the hint block
        assert with_mask(img.movedim(-1, 1), None, None).shape == (2, 16, 2, 2)


@pytest.mark.parametrize("name", ["", None, 3])
def test_loader_refuses_a_missing_name_before_touching_comfyui(name):
    with pytest.raises(ValueError, match="VMamba ControlNet Loader: 'control_net_name'"):
        NODES["InstructGIEVMambaControlNetLoader"]().load(name)


class _Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def fake_model(context_dim, model_channels=320, latent_channels=4):
    latent_format = _Obj(latent_channels=latent_channels)
    inner = _Obj(model_config=_Obj(unet_config={"context_dim": context_dim, "model_channels": model_channels}))
    return _Obj(model=inner, get_model_object=lambda name: latent_format)


@pytest.mark.parametrize("model, words", [
    (fake_model(2048), ["SDXL", "SD1.x", "checkpoint"]),
    (fake_model(768, latent_channels=16), ["16-channel"]),
    (fake_model(768, model_channels=384), ["384"]),
    ("not a model", ["'model'"]),
])
def test_sampler_model_fit_checks(model, words):
    sampler = importlib.import_module(PACK_NAME + ".nodes.sampler")
    block, _ = tiny_hint_block()
    block.encoder.config.out_channels = 320  # as for a real SD1.5 ControlNet
    vae = _Obj(encode=None, decode=None, latent_channels=4)
    with pytest.raises(ValueError) as e:
        sampler.check_model_fits(model, block, vae)
    for w in words:
        assert w in str(e.value)
    sampler.check_model_fits(fake_model(768), block, vae)  # the right pair passes


# --------------------------------------------------------------------------------------------------
# Property: random malformed input never escapes as anything but a clear error, never gives NaN
# --------------------------------------------------------------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_DTYPES = [torch.float32, torch.float64, torch.float16, torch.uint8, torch.int64, torch.bool]


@st.composite
def tensors(draw):
    ndim = draw(st.integers(0, 5))
    shape = [draw(st.sampled_from([0, 1, 2, 3, 4, 8, 9, 16, 24])) for _ in range(ndim)]
    dtype = draw(st.sampled_from(_DTYPES))
    kind = draw(st.sampled_from(["unit", "unit", "big", "neg", "nan", "inf"]))
    x = torch.rand(shape, dtype=torch.float64)
    if kind == "big":
        x = x * 300
    elif kind == "neg":
        x = x - 1
    elif kind == "nan" and x.numel():
        x.view(-1)[0] = float("nan")
    elif kind == "inf" and x.numel():
        x.view(-1)[-1] = float("inf")
    if dtype in (torch.uint8, torch.int64, torch.bool):
        x = torch.nan_to_num(x, 0.0, 0.0, 0.0)
        if dtype is torch.uint8:
            x = x.clamp(0, 255)
    return x.to(dtype)


@st.composite
def images(draw):
    """Half well-formed IMAGE tensors, half with something wrong (or not a tensor at all)."""
    if draw(st.booleans()):
        return torch.rand(1, draw(st.integers(8, 40)), draw(st.integers(8, 40)), 3)
    if draw(st.integers(0, 3)) == 0:
        return draw(st.one_of(tensors(), st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3)))
    b = draw(st.sampled_from([1, 1, 1, 2, 3, 0]))
    side = st.one_of(st.integers(8, 40), st.integers(8, 40), st.integers(8, 40), st.integers(0, 7))
    h, w = draw(side), draw(side)
    c = draw(st.sampled_from([3, 3, 3, 3, 1, 4, 2, 5]))
    x = torch.rand(b, h, w, c)
    if draw(st.integers(0, 7)) == 0:
        x = x * draw(st.sampled_from([-1.0, 2.0, float("nan"), float("inf")]))
    return x


junk = st.one_of(st.none(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=8),
                 st.booleans(), tensors())


def _check_outcome(call):
    try:
        result = call()
    except (ValueError, TypeError) as e:
        assert str(e).strip(), f"empty error message from {type(e).__name__}"
        COUNT["error"] += 1
        return "error"
    COUNT["ok"] += 1
    if isinstance(result, dict):  # a node that also shows text in the UI: {"ui": ..., "result": (...)}
        result = result["result"]
    for out in result:
        if isinstance(out, torch.Tensor):
            assert torch.isfinite(out).all(), "NaN/inf in a node output"
        elif isinstance(out, str):
            assert out.strip()
    return "ok"


FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
COUNT = {"calls": 0, "ok": 0, "error": 0}


@FUZZ
@given(before=images(), after=images(), query=images(),
       tile=st.sampled_from([64] * 8 + [128, 0, 63, -64, 2048, None, "64", 64.0, True, float("nan")]),
       resize=st.sampled_from(["fit", "crop", "stretch"] * 3 + ["zoom", "", None, 1]),
       extra=st.dictionaries(st.sampled_from(["example_before_2", "example_after_2", "example_after_3", "bogus"]),
                             images(), max_size=2))
def test_fuzz_concatenate(before, after, query, tile, resize, extra):
    COUNT["calls"] += 1
    _check_outcome(lambda: Concat().concatenate(before, after, query, tile=tile, resize=resize, **extra))


PHRASES = ["make it snowy", "Could you please paint the car red?", "turn the sky purple", "add a hat"]


@FUZZ
@given(text=st.one_of(st.sampled_from(PHRASES), st.text(max_size=60), st.text(max_size=3), junk),
       backend=st.sampled_from(["rules"] * 6 + ["embedding", "llm", "RULES", "", None, 3]),
       bank=st.one_of(st.just(""), st.text(max_size=20), junk),
       llm_model=st.one_of(st.just(""), st.just("/nonexistent/llm"), junk))
def test_fuzz_unifier(text, backend, bank, llm_model):
    COUNT["calls"] += 1
    _check_outcome(lambda: Unifier().unify(text, backend, bank=bank, llm_model=llm_model))


@FUZZ
@given(image=images(),
       region=st.sampled_from(["face"] * 6 + ["hair", "person", "nose", "", None]),
       backend=st.sampled_from(["auto"] * 4 + ["haar"] * 2 + ["mask2former", "face_parsing", "x", None]),
       dilate=st.one_of(st.integers(0, 8), st.integers(-5, 600), junk),
       feather=st.one_of(st.integers(0, 8), st.integers(-5, 600), junk))
def test_fuzz_face_mask(image, region, backend, dilate, feather):
    COUNT["calls"] += 1
    _check_outcome(lambda: FaceMask().mask(image, region, backend, dilate, feather))


def test_fuzz_ran_at_least_500_inputs():
    # Runs after the three property tests in file order; derandomized, so the count is stable.
    if COUNT["calls"] == 0:
        pytest.skip("run with the property tests (whole file) to count their inputs")
    assert COUNT["calls"] >= 500, COUNT
    # Both ends were exercised: some inputs were usable, many were refused.
    assert COUNT["ok"] >= 20 and COUNT["error"] >= 200, COUNT


# --------------------------------------------------------------------------------------------------
# InstructGIE Sampler: every check made before ComfyUI is touched
# --------------------------------------------------------------------------------------------------
SAMPLERS, SCHEDULERS = ["euler", "dpmpp_2m"], ["normal", "karras"]


def sampler_setup():
    if "sampler_setup" not in _SETUP:
        _SETUP["sampler_setup"] = _sampler_setup()
    sampler, args = _SETUP["sampler_setup"]
    return sampler, dict(args)


_SETUP: dict = {}


def _sampler_setup():
    sampler = importlib.import_module(PACK_NAME + ".nodes.sampler")
    block, _ = tiny_hint_block()
    block.encoder.config.out_channels = 320
    control_net = _Obj(control_model=_Obj(input_hint_block=block))
    vae = _Obj(encode=None, decode=None, latent_channels=4)
    grid, hint, mask, layout = Concat().concatenate(rand_image(), rand_image(), rand_image(b=2), tile=64, resize="fit")
    args = dict(model=fake_model(768), control_net=control_net, vae=vae, grid=grid, hint=hint, target_mask=mask,
                layout=layout, seed=1, steps=4, cfg=7.0, sampler_name="euler", scheduler="normal",
                control_strength=1.0, control_start=0.0, control_end=1.0, denoise=1.0, crop="query size",
                samplers=SAMPLERS, schedulers=SCHEDULERS)
    return sampler, args


def test_sampler_checks_pass_for_a_matching_visual_prompt():
    sampler, args = sampler_setup()
    v = sampler.check_inputs(**args)
    assert v["grid"].shape == (2, 128, 128, 3) and v["mask"].shape == (2, 128, 128)
    assert (v["steps"], v["sampler_name"], v["crop"]) == (4, "euler", "query size")
    args.update(grid=args["grid"][..., :1], target_mask=args["target_mask"][:1])  # gray grid, one shared mask
    assert sampler.check_inputs(**args)["grid"].shape == (2, 128, 128, 3)


@pytest.mark.parametrize("change, words", [
    (lambda a: dict(grid=torch.rand(2, 64, 64, 3)), ["'grid' is 64x64", "layout"]),
    (lambda a: dict(hint=torch.rand(2, 128, 64, 3)), ["'hint' is 128x64"]),
    (lambda a: dict(hint=torch.rand(3, 128, 128, 3)), ["'hint' has a batch of 3"]),
    (lambda a: dict(target_mask=torch.ones(2, 64, 64)), ["'target_mask' is 64x64", "128x128"]),
    (lambda a: dict(target_mask=torch.zeros(2, 128, 128)), ["'target_mask' is empty"]),
    (lambda a: dict(target_mask=torch.ones(3, 128, 128)), ["'target_mask' has a batch of 3"]),
    (lambda a: dict(layout={"tile": 64}), ["'layout'", "Visual Prompt Concatenate"]),
    (lambda a: dict(grid=torch.rand(1, 1, 1, 3)), ["'grid'", "1x1"]),
    (lambda a: dict(control_net=_Obj(control_model=_Obj(input_hint_block=torch.nn.Conv2d(3, 3, 1)))),
     ["not a VMamba ControlNet", "VMamba ControlNet Loader"]),
    (lambda a: dict(model=fake_model(2048)), ["SDXL"]),
    (lambda a: dict(vae="vae"), ["'vae'"]),
    (lambda a: dict(steps=0), ["'steps'"]),
    (lambda a: dict(cfg=float("nan")), ["'cfg'", "finite"]),
    (lambda a: dict(sampler_name="ddim_magic"), ["'sampler_name'", "euler"]),
    (lambda a: dict(scheduler=None), ["'scheduler'"]),
    (lambda a: dict(control_start=0.8, control_end=0.2), ["'control_start'", "'control_end'"]),
    (lambda a: dict(denoise=0.0), ["'denoise'"]),
    (lambda a: dict(crop="square"), ["'crop'"]),
])
def test_sampler_bad_input(change, words):
    sampler, args = sampler_setup()
    args.update(change(args))
    with pytest.raises(ValueError) as e:
        sampler.check_inputs(**args)
    msg = str(e.value)
    assert msg.startswith("InstructGIE Sampler:")
    for w in words:
        assert w in msg


@FUZZ
@given(grid=images(), hint=images(), mask=st.one_of(tensors(), st.builds(lambda h, w: torch.rand(1, h, w), st.integers(1, 40), st.integers(1, 40)), junk),
       keep=st.tuples(*[st.sampled_from([True, True, True, False])] * 3),
       steps=st.one_of(st.integers(1, 20), st.integers(-2, 20), junk), cfg=st.one_of(st.floats(0, 30), st.floats(-5, 200), junk),
       sampler_name=st.sampled_from(SAMPLERS * 3 + ["", None, "x"]),
       denoise=st.one_of(st.floats(0.01, 1), st.floats(-1, 2), junk),
       start=st.one_of(st.just(0.0), st.floats(-1, 2), junk), end=st.one_of(st.just(1.0), st.floats(-1, 2), junk))
def test_fuzz_sampler_checks(grid, hint, mask, keep, steps, cfg, sampler_name, denoise, start, end):
    sampler, args = sampler_setup()
    # Each of grid/hint/mask is the matching one from the visual prompt or a random malformed one.
    for name, value, k in (("grid", grid, keep[0]), ("hint", hint, keep[1]), ("target_mask", mask, keep[2])):
        if not k:
            args[name] = value
    args.update(steps=steps, cfg=cfg, sampler_name=sampler_name, denoise=denoise, control_start=start, control_end=end)
    try:
        v = sampler.check_inputs(**args)
    except (ValueError, TypeError) as e:
        assert str(e).strip()
        SAMPLER_OUTCOMES["error"] += 1
        return
    SAMPLER_OUTCOMES["ok"] += 1
    assert all(torch.isfinite(v[k]).all() for k in ("grid", "hint", "mask"))


SAMPLER_OUTCOMES = {"ok": 0, "error": 0}


def test_fuzz_sampler_reached_both_outcomes():
    if SAMPLER_OUTCOMES["ok"] + SAMPLER_OUTCOMES["error"] == 0:
        pytest.skip("run with the sampler property test")
    assert SAMPLER_OUTCOMES["ok"] >= 5 and SAMPLER_OUTCOMES["error"] >= 100, SAMPLER_OUTCOMES

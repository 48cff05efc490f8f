"""The shipped workflows as files, without ComfyUI: what ComfyUI's Templates panel will list, and
whether each UI workflow looks right when dropped onto the canvas.

Layout facts of ComfyUI's frontend (1.35, LiteGraph) used here: a node's title bar (30) sits above
``pos``; a socket row is 20 high and a widget at least 24; an image preview needs 224 below the
widgets (measured: Load Image's computeSize is 102 high without, 326 with), or the frontend grows
the node over its neighbours; the canvas draws point p at ``(p + offset) * scale``.
tests/test_comfyui.py checks the same in the real frontend.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
UI_DIR, API_DIR = ROOT / "example_workflows", ROOT / "api_workflows"
NAMES = sorted(p.stem for p in UI_DIR.glob("*.json"))
# The folders ComfyUI 0.8 lists a pack's templates from (app/custom_node_manager.py).
SCANNED = ("example_workflows", "example", "examples", "workflow", "workflows")
TITLE_H, SLOT_H, WIDGET_H, PREVIEW_MIN = 30, 20, 24, 224
# Nodes the frontend draws images in: loaded and saved images, and the samplers' latent previews
# (shown during sampling and kept after it).
SHOWS_IMAGES = {"LoadImage", "SaveImage", "PreviewImage", "KSampler", "KSamplerAdvanced", "SamplerCustom",
                "InstructGIESampler"}
NOTES = {"Note", "MarkdownNote"}
# The saved view must show everything on a 1920x960 canvas, clear of the sidebar (left), the tab
# bar and Run buttons (top) and the minimap (bottom-right corner), at a zoom one can read.
CANVAS = (1920, 960)
FREE = (60, 90, 1920, 960)
MINIMAP_CORNER = (1650, 690)
MIN_SCALE = 0.7


def load(name):
    return json.loads((UI_DIR / f"{name}.json").read_text())


def rect(node):
    """[x0, y0, x1, y1] of a node, title bar included."""
    (x, y), (w, h) = node["pos"], node["size"]
    return (x, y - TITLE_H, x + w, y + h)


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def body_height(node) -> int:
    """A lower bound of the height the frontend needs for a node's sockets and widgets."""
    widgets = len(node.get("widgets_values") or [])
    rows = max(1, len(node["inputs"]), len(node["outputs"]))
    return rows * SLOT_H + widgets * WIDGET_H + (14 if widgets else 6)


def test_templates_folder_holds_only_loadable_ui_workflows_with_thumbnails():
    assert NAMES, "no workflows in example_workflows/"
    for path in UI_DIR.glob("*.json"):
        ui = json.loads(path.read_text())
        assert {"nodes", "links", "version"} <= set(ui), f"{path.name} is not a UI workflow"
        thumb = Image.open(UI_DIR / f"{path.stem}.jpg")
        assert thumb.format == "JPEG" and min(thumb.size) >= 200, path.stem
    # The API twins: one per UI workflow, in a folder ComfyUI does not list.
    assert sorted(p.name[: -len("_api.json")] for p in API_DIR.glob("*_api.json")) == NAMES
    assert API_DIR.name not in SCANNED
    for folder in SCANNED:
        if folder != UI_DIR.name:
            assert not list((ROOT / folder).glob("*.json")), f"ComfyUI would list {folder}/ as templates too"


@pytest.mark.parametrize("name", NAMES)
def test_screenshot_carries_the_workflow_and_its_api_twin(name):
    """Dropping the PNG onto ComfyUI loads the workflow (the metadata Save Image writes)."""
    png = Image.open(UI_DIR / f"{name}.png")
    assert json.loads(png.info["workflow"]) == load(name), "stale screenshot: run scripts/comfyui_screenshots.sh"
    assert json.loads(png.info["prompt"]) == json.loads((API_DIR / f"{name}_api.json").read_text())
    assert (UI_DIR / f"{name}.png").stat().st_size < 400_000  # committed pictures stay small


@pytest.mark.parametrize("name", NAMES)
def test_no_node_overlaps_another_even_with_image_previews(name):
    nodes = load(name)["nodes"]
    for n in nodes:
        need = body_height(n) + (PREVIEW_MIN if n["type"] in SHOWS_IMAGES else 0)
        assert n["size"][1] >= need, f"{name}: '{n['title']}' is {n['size'][1]} high, needs {need}"
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            assert not overlap(rect(a), rect(b)), f"{name}: '{a['title']}' overlaps '{b['title']}'"


@pytest.mark.parametrize("name", NAMES)
def test_every_node_sits_in_a_titled_group(name):
    ui = load(name)
    groups = ui["groups"]
    assert groups and all(g["title"].strip() for g in groups)
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            assert not overlap(_box(a), _box(b)), f"{name}: groups '{a['title']}' and '{b['title']}' overlap"
    for n in ui["nodes"]:
        r = rect(n)
        inside = [g["title"] for g in groups
                  if _box(g)[0] <= r[0] and _box(g)[1] + 34 <= r[1] and r[2] <= _box(g)[2] and r[3] <= _box(g)[3]]
        assert len(inside) == 1, f"{name}: '{n['title']}' is inside {inside} (below a group's title, in exactly one)"


def _box(group):
    x, y, w, h = group["bounding"]
    return (x, y, x + w, y + h)


def test_edit_workflows_have_the_groups_a_user_reads_left_to_right():
    for name in NAMES:
        groups = {g["title"]: _box(g) for g in load(name)["groups"]}
        if "edit" in name:
            assert {"examples", "instruction", "edit", "outputs"} <= set(groups), name
            assert groups["examples"][0] < groups["instruction"][0] < groups["edit"][0] < groups["outputs"][0]


@pytest.mark.parametrize("name", NAMES)
def test_a_note_says_where_each_model_comes_from(name):
    ui = load(name)
    notes = " ".join(str(v) for n in ui["nodes"] if n["type"] in NOTES for v in n["widgets_values"])
    types = {n["type"] for n in ui["nodes"]}
    if "CheckpointLoaderSimple" in types:
        assert "models/checkpoints" in notes and "SD1.5" in notes
    if "InstructGIEVMambaControlNetLoader" in types:
        assert "models/instructgie" in notes
    if "InstructGIEFaceRegionMask" in types and "CheckpointLoaderSimple" not in types:
        assert "model_path" in notes


@pytest.mark.parametrize("name", NAMES)
def test_saved_view_shows_the_whole_graph_readably(name):
    ui = load(name)
    view = ui["extra"]["ds"]
    scale, (ox, oy) = view["scale"], view["offset"]
    assert MIN_SCALE <= scale <= 1.0
    for item in [rect(n) for n in ui["nodes"]] + [_box(g) for g in ui["groups"]]:
        x0, y0, x1, y1 = ((item[0] + ox) * scale, (item[1] + oy) * scale, (item[2] + ox) * scale, (item[3] + oy) * scale)
        assert FREE[0] <= x0 and FREE[1] <= y0 and x1 <= FREE[2] and y1 <= FREE[3], (name, item)
        assert not (x1 > MINIMAP_CORNER[0] and y1 > MINIMAP_CORNER[1]), f"{name}: {item} is under the minimap"


@pytest.mark.parametrize("name", NAMES)
def test_links_connect_the_sockets_they_name(name):
    ui = load(name)
    nodes = {n["id"]: n for n in ui["nodes"]}
    for lid, src, src_slot, dst, dst_slot, kind in ui["links"]:
        assert lid in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == lid
        assert nodes[src]["outputs"][src_slot]["type"] == nodes[dst]["inputs"][dst_slot]["type"] == kind


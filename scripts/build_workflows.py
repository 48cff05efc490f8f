"""Regenerate the UI-format workflows (``example_workflows/*.json``) from their API twins.

    python scripts/build_workflows.py --server http://127.0.0.1:8188

The API files (``api_workflows/*_api.json``) are the source of the graph. The live node
definitions of a running ComfyUI with this pack (``/object_info``) give the input order, which
inputs are widgets and so each node's height. The layout below (groups of nodes, left to right,
room for image previews, notes where a user must act) turns that into a LiteGraph workflow that
ComfyUI's frontend loads as it is: nothing overlaps, not even once images are shown, and the saved
view shows the whole graph. ``tests/test_workflows.py`` checks those properties; the real frontend
checks them again in ``tests/test_comfyui.py``. Screenshots and the Templates thumbnails come from
``scripts/comfyui_screenshots.sh``. Needs no ComfyUI import and no third-party package.
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
API_DIR = ROOT / "api_workflows"
UI_DIR = ROOT / "example_workflows"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

# Sizes in canvas units, as ComfyUI's frontend (1.35, LiteGraph) draws nodes: the title bar sits
# above node.pos; a socket row is 20 high, a widget 24, a multiline text box at least 54; an image
# preview needs about 224 below the widgets (the frontend grows a node that has less).
TITLE_H = 30
SLOT_H = 20
WIDGET_H = 24
MULTILINE_H = 54
BODY_PAD = 14
PREVIEW_MIN = 240  # the frontend measured 224 (Load Image: 102 without its preview, 326 with)
GROUP_TITLE_H = 34
GROUP_PAD = 20
GAP = 30          # between nodes of a group
GROUP_GAP = 40    # between groups
# The saved view is made for a 1920x960 canvas (a 1080p screen less the browser's bars). The
# frontend covers parts of it: the sidebar (left 60 px), the tab bar and floating Run buttons (top
# 90 px) and the minimap with the zoom bar (bottom-right corner, from x 1650 and y 690).
VIEW_W, VIEW_H = 1920, 960
VIEW_FREE = (70, 96, 1896, 936)   # x0, y0, x1, y1 not covered by the sidebar and the top bar
MINIMAP = (1650, 690)             # the corner right of x and below y
MAX_SCALE = 1.0

GROUP_COLORS = {"examples": "#3f789e", "models": "#444444", "instruction": "#b58b2a", "edit": "#a1309b",
                "outputs": "#88AA88", "input": "#3f789e", "face mask": "#a1309b"}
NOTE_COLOR, NOTE_BGCOLOR = "#432", "#653"  # the frontend's yellow, as ComfyUI's own templates use for notes


@dataclass
class Node:
    """An API node placed in the layout: width, and extra height for an image preview."""
    id: str
    width: int = 300
    preview: int = 0  # height kept free below the widgets for image previews (0: none)


@dataclass
class Note:
    """A Markdown note (frontend only: not part of the prompt)."""
    text: str
    width: int = 300
    height: int = 120


@dataclass
class Group:
    title: str
    stacks: list[list[Node | Note]]  # side by side, each a vertical stack
    color: str | None = None


@dataclass
class Layout:
    columns: list[list[Group]]  # left to right, each a vertical stack of groups


MODELS_NOTE = ("**Pick your models** (press R after copying files)\n\n"
               "- *Load Checkpoint*: an SD1.5 checkpoint from `models/checkpoints`\n"
               "- *VMamba ControlNet Loader*: an InstructGIE VMamba ControlNet from `models/instructgie` "
               "(`instructgie-train --preset sd15` makes one)")
EXAMPLES_NOTE = ("**Your images here.** The example pair (before, after) shows the edit; the query is "
                 "edited the same way. These come from the pack's `example_workflows/input`: copy them to "
                 "ComfyUI's `input` folder, or upload your own.")
FACES_NOTE = ("**Regions.** `face` works offline (OpenCV). `hair`, `skin`, `eyes`, `person`... need a local "
              "face-parsing or Mask2Former folder in `model_path` (nothing is downloaded).")
LOAD_IMAGE = dict(width=250, preview=230)
# A sampler node shows the latent preview of each step (and keeps the last one) below its widgets.
SAMPLER_PREVIEW = PREVIEW_MIN

LAYOUTS: dict[str, Layout] = {
    "instructgie_edit_by_example": Layout([
        [Group("examples", [[Node("2", **LOAD_IMAGE), Node("4", **LOAD_IMAGE)],
                            [Node("3", **LOAD_IMAGE), Note(EXAMPLES_NOTE, 250, 170)]])],
        [Group("models", [[Node("1", 300), Note(MODELS_NOTE, 300, 170), Node("8", 300)]]),
         Group("instruction", [[Node("6", 300), Node("7", 300)]])],
        [Group("edit", [[Node("5", 310), Node("9", 310, preview=SAMPLER_PREVIEW)]])],
        [Group("outputs", [[Node("10", 330, preview=340), Node("11", 330, preview=340)],
                           [Node("12", 280), Node("13", 280), Node("14", 280, preview=250)]])],
    ]),
    "instructgie_edit_with_stock_nodes": Layout([
        [Group("examples", [[Node("2", **LOAD_IMAGE), Node("4", **LOAD_IMAGE)],
                            [Node("3", **LOAD_IMAGE), Note(EXAMPLES_NOTE, 250, 170)]])],
        [Group("models", [[Node("1", 300), Note(MODELS_NOTE, 300, 170), Node("8", 300)]]),
         Group("instruction", [[Node("6", 300), Node("7", 300)]])],
        [Group("edit", [[Node("5", 300), Node("10", 300), Node("11", 300)],
                        [Node("9", 300), Node("12", 300, preview=SAMPLER_PREVIEW), Node("13", 300), Node("14", 300)]])],
        [Group("outputs", [[Node("15", 360, preview=360)]])],
    ]),
    "instructgie_face_region_mask": Layout([
        [Group("input", [[Node("1", 300, preview=300)]])],
        [Group("face mask", [[Node("2", 320), Note(FACES_NOTE, 320, 140)]])],
        [Group("outputs", [[Node("3", 260), Node("4", 300, preview=300)],
                           [Node("6", 260), Node("5", 260), Node("7", 300, preview=300)]])],
    ]),
}


def is_widget(spec) -> bool:
    """Whether an /object_info input spec is a widget (stored in widgets_values) rather than a socket."""
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def ordered_inputs(info: dict) -> list[tuple[str, list]]:
    """(name, spec) of a node's inputs in ComfyUI's order: required then optional."""
    out = []
    for group in ("required", "optional"):
        specs = info["input"].get(group, {})
        for name in info.get("input_order", {}).get(group, list(specs)):
            out.append((name, specs[name]))
    return out


def widget_values(info: dict, inputs: dict) -> list:
    """widgets_values as the frontend stores them (extra entries for seed control and image upload)."""
    values = []
    for name, spec in ordered_inputs(info):
        if not is_widget(spec):
            continue
        opts = spec[1] if len(spec) > 1 else {}
        value = inputs.get(name, opts.get("default"))
        if isinstance(value, list):  # a widget converted to a socket: not supported here
            raise ValueError(f"{info['name']}.{name}: linked widget inputs are not supported")
        values.append(value)
        if opts.get("control_after_generate"):
            values.append("fixed")
        if opts.get("image_upload"):
            values.append("image")
    return values


def body_height(info: dict) -> int:
    """The height the frontend needs for a node's sockets and widgets (without any image preview)."""
    sockets = sum(1 for _, spec in ordered_inputs(info) if not is_widget(spec))
    widgets = 0
    for _, spec in ordered_inputs(info):
        if not is_widget(spec):
            continue
        opts = spec[1] if len(spec) > 1 else {}
        widgets += MULTILINE_H if opts.get("multiline") else WIDGET_H
        widgets += WIDGET_H * (bool(opts.get("control_after_generate")) + bool(opts.get("image_upload")))
    rows = max(1, sockets, len(info["output"]))
    return rows * SLOT_H + widgets + (BODY_PAD if widgets else 6)


def _place(layout: Layout, heights: dict) -> tuple[dict, list]:
    """Positions: {item: (x, y, w, h)} of node bodies (the title bar is above y) and group boxes."""
    boxes, groups = {}, []
    x = 0
    for column in layout.columns:
        y, column_w = 0, 0
        for group in column:
            gx, cy = x, y + GROUP_TITLE_H + GROUP_PAD // 2
            sx, content_h = gx + GROUP_PAD, 0
            for stack in group.stacks:
                sy, stack_w = cy, 0
                for item in stack:
                    h = heights[id(item)]
                    boxes[id(item)] = (sx, sy + TITLE_H, item.width, h)
                    sy += TITLE_H + h + GAP
                    stack_w = max(stack_w, item.width)
                content_h = max(content_h, sy - GAP - cy)
                sx += stack_w + GAP
            gw, gh = sx - GAP + GROUP_PAD - gx, GROUP_TITLE_H + GROUP_PAD // 2 + content_h + GROUP_PAD
            groups.append((group, [gx, y, gw, gh]))
            y += gh + GROUP_GAP
            column_w = max(column_w, gw)
        x += column_w + GROUP_GAP
    return boxes, groups


def saved_view(groups: list) -> dict:
    """Scale and offset that show every group at once on the VIEW_W x VIEW_H canvas, clear of the
    frontend's own panels: either above the minimap's corner or left of it, whichever is larger."""
    x0 = min(b[0] for _, b in groups)
    y0 = min(b[1] for _, b in groups)
    w = max(b[0] + b[2] for _, b in groups) - x0
    h = max(b[1] + b[3] for _, b in groups) - y0
    fx0, fy0, fx1, fy1 = VIEW_FREE
    areas = [(fx0, fy0, fx1, MINIMAP[1]), (fx0, fy0, MINIMAP[0], fy1)]
    best = max(areas, key=lambda a: min((a[2] - a[0]) / w, (a[3] - a[1]) / h))
    ax0, ay0, ax1, ay1 = best
    scale = min(MAX_SCALE, (ax1 - ax0) / w, (ay1 - ay0) / h)
    scale = int(scale * 100) / 100  # a round zoom level, never above the fitting one
    left = ax0 + ((ax1 - ax0) - w * scale) / 2
    top = ay0 + ((ay1 - ay0) - h * scale) / 2
    # The frontend draws canvas point p at screen (p + offset) * scale.
    return {"scale": scale, "offset": [round(left / scale - x0, 1), round(top / scale - y0, 1)]}


def api_to_ui(api: dict, object_info: dict, layout: Layout) -> dict:
    """A LiteGraph UI workflow for an API-format prompt, placed as ``layout`` says."""
    ids = sorted(api, key=int)
    items = [item for column in layout.columns for group in column for stack in group.stacks for item in stack]
    placed = {item.id for item in items if isinstance(item, Node)}
    if placed != set(ids):
        raise ValueError(f"layout places {sorted(placed, key=int)} but the workflow has {ids}")
    heights = {}
    for item in items:
        if isinstance(item, Note):
            heights[id(item)] = item.height
        else:
            info = object_info[api[item.id]["class_type"]]
            heights[id(item)] = body_height(info) + (max(item.preview, PREVIEW_MIN) if item.preview else 0)
    boxes, groups = _place(layout, heights)

    links, out_links, in_link = [], {}, {}
    for nid in ids:
        info = object_info[api[nid]["class_type"]]
        for name, spec in ordered_inputs(info):
            v = api[nid]["inputs"].get(name)
            if isinstance(v, list) and not is_widget(spec):
                src, slot = v
                lid = len(links) + 1
                links.append([lid, int(src), int(slot), int(nid), None, spec[0]])
                out_links.setdefault((src, int(slot)), []).append(lid)
                in_link[(nid, name)] = lid
    by_id = {item.id: item for item in items if isinstance(item, Node)}
    nodes = []
    for order, nid in enumerate(ids):
        node, info = api[nid], object_info[api[nid]["class_type"]]
        inputs = []
        for name, spec in ordered_inputs(info):
            if is_widget(spec):
                continue
            lid = in_link.get((nid, name))
            if lid is not None:
                links[lid - 1][4] = len(inputs)
            inputs.append({"name": name, "type": spec[0], "link": lid})
        outputs = [{"name": oname, "type": otype, "links": out_links.get((nid, i), []), "slot_index": i}
                   for i, (oname, otype) in enumerate(zip(info["output_name"], info["output"]))]
        x, y, w, h = boxes[id(by_id[nid])]
        nodes.append({
            "id": int(nid), "type": node["class_type"], "pos": [x, y], "size": [w, h],
            "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
            "title": node.get("_meta", {}).get("title", info.get("display_name", node["class_type"])),
            "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": widget_values(info, node["inputs"]),
        })
    next_id = max(int(i) for i in ids)
    for item in items:
        if isinstance(item, Note):
            next_id += 1
            x, y, w, h = boxes[id(item)]
            nodes.append({"id": next_id, "type": "MarkdownNote", "pos": [x, y], "size": [w, h], "flags": {},
                          "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "title": "Note",
                          "properties": {}, "widgets_values": [item.text],
                          "color": NOTE_COLOR, "bgcolor": NOTE_BGCOLOR})
    ui_groups = [{"id": i + 1, "title": g.title, "bounding": box, "color": g.color or GROUP_COLORS.get(g.title, "#444444"),
                  "font_size": 24, "flags": {}} for i, (g, box) in enumerate(groups)]
    return {"last_node_id": next_id, "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": ui_groups, "config": {}, "extra": {"ds": saved_view(groups)}, "version": 0.4}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="a running ComfyUI with this pack")
    args = parser.parse_args(argv)
    with urllib.request.urlopen(args.server.rstrip("/") + "/object_info") as r:
        object_info = json.load(r)
    for api_path in sorted(API_DIR.glob("*_api.json")):
        stem = api_path.name[: -len("_api.json")]
        if stem not in LAYOUTS:
            raise SystemExit(f"{api_path.name}: add a layout for {stem!r} to LAYOUTS")
        ui = api_to_ui(json.loads(api_path.read_text()), object_info, LAYOUTS[stem])
        (UI_DIR / f"{stem}.json").write_text(json.dumps(ui, indent=1) + "\n")
        print("wrote", (UI_DIR / f"{stem}.json").relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Regenerate the UI-format workflows and their PNG previews from the API-format twins.

    python workflows/build_workflows.py --server http://127.0.0.1:8188

The API files (``*_api.json``) are the source. For each, the live node definitions of a running
ComfyUI (``/object_info``, with this pack loaded) give the input order and which inputs are widgets,
so the UI file (``*.json``: LiteGraph nodes, links, widget values) loads by drag-and-drop exactly as
the API twin describes. Each gets a ``*.png`` picture of the graph that carries both JSONs in its
metadata the way ComfyUI's Save Image does, so dropping the PNG onto ComfyUI loads the workflow too.
Needs Pillow only (no ComfyUI import).
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
COL_W, NODE_W, GAP_Y = 380, 330, 30
TYPE_COLORS = {"MODEL": "#b39ddb", "CLIP": "#ffd54f", "VAE": "#ef5350", "IMAGE": "#64b5f6", "MASK": "#81c784",
               "LATENT": "#f48fb1", "CONDITIONING": "#ffa726", "CONTROL_NET": "#4db6ac", "GIE_LAYOUT": "#e0e0e0",
               "STRING": "#aed581"}


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


def widget_values(info: dict, inputs: dict, names: list | None = None) -> list:
    """widgets_values as the frontend stores them (extra entries for seed control and image upload);
    ``names``, when given, receives the widget name of each value."""
    values = []
    names = [] if names is None else names
    for name, spec in ordered_inputs(info):
        if not is_widget(spec):
            continue
        opts = spec[1] if len(spec) > 1 else {}
        value = inputs.get(name, opts.get("default"))
        if isinstance(value, list):  # a widget converted to a socket: not supported here
            raise ValueError(f"{info['name']}.{name}: linked widget inputs are not supported")
        values.append(value)
        names.append(name)
        if opts.get("control_after_generate"):
            values.append("fixed")
            names.append("control after generate")
        if opts.get("image_upload"):
            values.append("image")
            names.append("upload")
    return values


def api_to_ui(api: dict, object_info: dict) -> dict:
    """A LiteGraph UI workflow for an API-format prompt, laid out left to right by depth."""
    ids = sorted(api, key=int)
    depth: dict[str, int] = {}

    def node_depth(nid: str) -> int:
        if nid not in depth:
            srcs = [v[0] for v in api[nid]["inputs"].values() if isinstance(v, list)]
            depth[nid] = 1 + max((node_depth(s) for s in srcs), default=-1)
        return depth[nid]

    for nid in ids:
        node_depth(nid)
    links, nodes = [], []
    out_links: dict[tuple[str, int], list[int]] = {}
    in_link: dict[tuple[str, str], int] = {}
    for nid in ids:
        info = object_info[api[nid]["class_type"]]
        for name, spec in ordered_inputs(info):
            v = api[nid]["inputs"].get(name)
            if isinstance(v, list) and not is_widget(spec):
                src, slot = v
                lid = len(links) + 1
                links.append([lid, int(src), int(slot), int(nid), None, None])
                out_links.setdefault((src, int(slot)), []).append(lid)
                in_link[(nid, name)] = lid
    column_y: dict[int, float] = {}
    for order, nid in enumerate(sorted(ids, key=lambda n: (depth[n], int(n)))):
        node = api[nid]
        info = object_info[node["class_type"]]
        inputs = []
        for name, spec in ordered_inputs(info):
            if is_widget(spec):
                continue
            lid = in_link.get((nid, name))
            if lid is not None:
                links[lid - 1][4] = len(inputs)
                links[lid - 1][5] = spec[0]
            inputs.append({"name": name, "type": spec[0], "link": lid})
        outputs = [{"name": oname, "type": otype, "links": out_links.get((nid, i), []), "slot_index": i}
                   for i, (oname, otype) in enumerate(zip(info["output_name"], info["output"]))]
        wv = widget_values(info, node["inputs"])
        height = 46 + 22 * max(len(inputs), len(outputs)) + 26 * len(wv)
        d = depth[nid]
        y = column_y.get(d, 0.0)
        column_y[d] = y + height + GAP_Y
        nodes.append({
            "id": int(nid), "type": node["class_type"], "pos": [40 + d * COL_W, 40 + y], "size": [NODE_W, height],
            "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
            "title": node.get("_meta", {}).get("title", info.get("display_name", node["class_type"])),
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": wv,
        })
    return {"last_node_id": max(int(i) for i in ids), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


def render_png(ui: dict, api: dict, path: Path, caption: str, object_info: dict) -> None:
    """Draw the graph (boxes, sockets, links, widget values) and embed both JSONs as PNG text chunks."""
    from PIL import Image, ImageDraw, ImageFont
    from PIL.PngImagePlugin import PngInfo

    nodes = {n["id"]: n for n in ui["nodes"]}
    w = int(max(n["pos"][0] + n["size"][0] for n in nodes.values()) + 40)
    h = int(max(n["pos"][1] + n["size"][1] for n in nodes.values()) + 90)
    img = Image.new("RGB", (w, h), "#202124")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        pass

    def socket(node, side, slot):
        x = node["pos"][0] + (node["size"][0] if side == "out" else 0)
        return x, node["pos"][1] + 40 + 22 * slot

    for _lid, src, sslot, dst, dslot, kind in ui["links"]:
        x0, y0 = socket(nodes[src], "out", sslot)
        x1, y1 = socket(nodes[dst], "in", dslot)
        color = TYPE_COLORS.get(kind, "#9e9e9e")
        mx = (x0 + x1) / 2
        draw.line([(x0, y0), (mx, y0), (mx, y1), (x1, y1)], fill=color, width=3)
    for n in nodes.values():
        x, y = n["pos"]
        bw, bh = n["size"]
        ours = n["type"].startswith("InstructGIE")
        draw.rounded_rectangle([x, y, x + bw, y + bh], radius=8, fill="#353535",
                               outline="#7e57c2" if ours else "#5f6368", width=3 if ours else 1)
        draw.rounded_rectangle([x, y, x + bw, y + 26], radius=8, fill="#4a3a6b" if ours else "#444")
        draw.text((x + 8, y + 5), n["title"][:44], fill="white", font=font)
        for i, inp in enumerate(n["inputs"]):
            sx, sy = socket(n, "in", i)
            draw.ellipse([sx - 5, sy - 5, sx + 5, sy + 5], fill=TYPE_COLORS.get(inp["type"], "#9e9e9e"))
            draw.text((sx + 10, sy - 8), inp["name"], fill="#cfcfcf", font=font)
        for i, out in enumerate(n["outputs"]):
            sx, sy = socket(n, "out", i)
            draw.ellipse([sx - 5, sy - 5, sx + 5, sy + 5], fill=TYPE_COLORS.get(out["type"], "#9e9e9e"))
            tw = draw.textlength(out["name"], font=font)
            draw.text((sx - 10 - tw, sy - 8), out["name"], fill="#cfcfcf", font=font)
        wy = y + 46 + 22 * max(len(n["inputs"]), len(n["outputs"]))
        names: list = []
        widget_values(object_info[n["type"]], api[str(n["id"])]["inputs"], names)
        for name, v in zip(names, n["widgets_values"]):
            text = str(v).replace("\n", " ")
            draw.rounded_rectangle([x + 8, wy - 2, x + bw - 8, wy + 20], radius=6, fill="#222")
            draw.text((x + 16, wy + 1), name[:20], fill="#9aa0a6", font=font)
            draw.text((x + 150, wy + 1), text[:26], fill="#e0e0e0", font=font)
            wy += 26
    draw.text((40, h - 50), caption, fill="#e0e0e0", font=font)
    meta = PngInfo()
    meta.add_text("workflow", json.dumps(ui))
    meta.add_text("prompt", json.dumps(api))
    img.save(path, pnginfo=meta)


CAPTIONS = {
    "instructgie_basic": "InstructGIE basic edit: example pair + query -> visual prompt -> VMamba ControlNet -> "
                         "InstructGIE Sampler -> edited query (drag this PNG onto ComfyUI to load it)",
    "instructgie_stock_nodes": "The same edit with ComfyUI's stock nodes: Apply ControlNet (Advanced) + VAE Encode + "
                               "Set Latent Noise Mask + KSampler + crop of the target cell",
    "instructgie_faces": "Face-Region Mask: the detail-critical regions InstructGIE's selective area matching protects",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="a running ComfyUI with this pack")
    args = parser.parse_args(argv)
    with urllib.request.urlopen(args.server.rstrip("/") + "/object_info") as r:
        object_info = json.load(r)
    for api_path in sorted(HERE.glob("*_api.json")):
        stem = api_path.name[: -len("_api.json")]
        api = json.loads(api_path.read_text())
        ui = api_to_ui(api, object_info)
        (HERE / f"{stem}.json").write_text(json.dumps(ui, indent=1) + "\n")
        render_png(ui, api, HERE / f"{stem}.png", CAPTIONS.get(stem, stem), object_info)
        print("wrote", stem + ".json", stem + ".png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

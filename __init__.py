"""ComfyUI-InstructGIE: ComfyUI entry point (ComfyUI imports this file as a package).

When the repository is simply cloned into ComfyUI/custom_nodes, the library ``gie_core`` beside
this file is not installed; it is then loaded from here under its own name. Only ``gie_core`` is
made importable (the pack folder is not put on sys.path), so this repo's ``nodes/`` and ``tests/``
folders cannot shadow ComfyUI's own ``nodes`` module.
"""
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _ensure_gie_core() -> None:
    if "gie_core" in sys.modules or importlib.util.find_spec("gie_core") is not None:
        return
    init = os.path.join(_HERE, "gie_core", "__init__.py")
    spec = importlib.util.spec_from_file_location("gie_core", init,
                                                  submodule_search_locations=[os.path.dirname(init)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["gie_core"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("gie_core", None)
        raise


_ensure_gie_core()

if __package__:  # imported as a package, as ComfyUI does
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, register_model_folder  # noqa: E402

    register_model_folder()
else:
    # pytest imports the repository root's __init__.py as a plain module when the checkout's folder
    # name is no Python identifier (e.g. "my-clone"); there is no package to import nodes/ from then,
    # and no ComfyUI to register with.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]

"""InstructGIE core library: VMamba ControlNet, selective-scan kernels, visual prompts,
instruction unification, region masks, an editing pipeline and the `instructgie` CLI.

Never imports ComfyUI. Heavy submodules are imported lazily by their users.
"""
__version__ = "0.1.0"

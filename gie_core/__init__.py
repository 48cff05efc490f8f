"""InstructGIE core library: VMamba ControlNet, selective-scan kernels, visual prompts,
instruction unification, region masks, an editing pipeline and the `instructgie` CLI.

Never imports ComfyUI. Heavy submodules are imported lazily by their users.
"""


def _version() -> str:
    """The version is written once, in pyproject.toml. A source checkout (a ComfyUI custom_nodes
    clone, an editable install) reads it there; an installed wheel from its package metadata."""
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        try:
            project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        except (OSError, tomllib.TOMLDecodeError):
            project = {}
        if project.get("name") == "comfyui-instructgie" and isinstance(project.get("version"), str):
            return project["version"]
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("comfyui-instructgie")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _version()

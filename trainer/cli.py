"""``instructgie-train`` / ``python -m trainer``: fine-tune an InstructGIE ControlNet.

Options come from the dataclass in :mod:`trainer.config`; a packaged preset (``--preset``) or a
YAML file (``--config``) sets many at once and explicit options override both. Multi-GPU and
multi-node runs go through accelerate: ``accelerate launch -m trainer --preset sd15 ...``.
"""
from __future__ import annotations

import argparse
import logging
import sys

EPILOG = """examples:
  instructgie-train --preset tiny_debug --output-dir runs/debug
  instructgie-train --preset sd15 --base-model /models/sd15 --clip-model /models/clip-vit-large \\
      --data /data/ip2p --output-dir runs/sd15
  instructgie-train --preset sd15 ... --no-esm --no-sam --no-liu --hint-encoder conv   # ablations
  instructgie-train --config my.yaml --resume latest   # SIGTERM / Ctrl-C write a checkpoint first
  accelerate launch --multi_gpu -m trainer --preset sd15 ...
  python -m trainer.data.synthetic data/synth --pairs-per-instruction 32 --size 64   # write a dataset
"""


def build_parser() -> argparse.ArgumentParser:
    from .config import add_arguments

    p = argparse.ArgumentParser(prog="instructgie-train", description=__doc__.split("\n\n")[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--print-config", action="store_true", help="print the merged configuration as YAML and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import config_from_args

    try:
        cfg = config_from_args(args)
    except ValueError as e:
        print(f"instructgie-train: error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from gie_core.runtime import prepare_process

    from .train import train

    try:
        prepare_process()  # torch threads for the CPUs idle now, numba's pool, no torchvision notes
        result = train(cfg)
    except ValueError as e:  # bad user input (paths, options): one line, no traceback
        print(f"instructgie-train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C while the first one's checkpoint was being written
        print("instructgie-train: interrupted (resume with --resume latest)", file=sys.stderr)
        return 130
    if result.get("interrupted"):
        import signal

        print(f"instructgie-train: {result['interrupted']} at step {result['steps']}: checkpoint written to "
              f"{cfg.output_dir}; continue with --resume latest", file=sys.stderr)
        return 128 + int(getattr(signal, result["interrupted"]))
    print(f"trained {result['steps']} steps; ControlNet written to {result['export']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

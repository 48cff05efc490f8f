"""Training configuration: one dataclass, YAML presets, every field a command-line option.

Precedence (last wins): the dataclass defaults < ``--preset NAME`` (``trainer/presets/NAME.yaml``)
< ``--config FILE.yaml`` < explicit command-line options.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRESETS_DIR = Path(__file__).parent / "presets"


@dataclass
class TrainConfig:
    """All training options. ``help`` metadata doubles as the ``--help`` text."""

    # --- data
    data: str = field(default="synthetic:pairs=16,size=64", metadata={"help": "dataset: a folder with metadata.jsonl, InstructPix2Pix's released folder (prompt folders with prompt.json), InstructPix2Pix parquet files / a datasets save_to_disk folder, or 'synthetic:pairs=N,size=S,seed=K,families=a+b,held_out=c+d'"})
    data_format: str = field(default="auto", metadata={"help": "auto | folder | ip2p (parquet / save_to_disk) | ip2p_folders (InstructPix2Pix's released prompt folders) | synthetic"})
    dedupe: str = field(default="hash", metadata={"help": "what keeps a sample's examples and query apart: hash (same source or same before image by content hash; repeated pairs dropped; reads every image once) | source (only source fields, e.g. InstructPix2Pix prompt folders) | none"})
    liu: bool = field(default=True, metadata={"help": "unify instructions (LIU); --no-liu for the ablation"})
    liu_backend: str = field(default="rules", metadata={"help": "gie_core.instruction backend"})
    k_examples: int = field(default=1, metadata={"help": "example pairs per visual prompt"})
    tile: int = field(default=256, metadata={"help": "cell size in pixels (a multiple of 8; 256 or 512 for SD1.5)"})
    resize: str = field(default="crop", metadata={"help": "how images fit a cell: crop | fit | stretch"})
    val_fraction: float = field(default=0.1, metadata={"help": "share of instructions held out for validation"})
    min_side: int = field(default=16, metadata={"help": "images with a smaller side are skipped"})
    verify: str = field(default="full", metadata={"help": "image check before training: full | header | none"})
    include_unseen: bool = field(default=False, metadata={"help": "also train on pairs marked seen=false (held-out families)"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})

    # --- model
    base_model: str = field(default="tiny", metadata={"help": "SD1.5 as a local diffusers folder or single .safetensors file, or 'tiny' (random tiny SD, tests and from-scratch training)"})
    hint_encoder: str = field(default="vmamba", metadata={"help": "vmamba (InstructGIE) | conv (diffusers' ControlNet hint encoder, the ablation)"})
    hint_encoder_config: str = field(default="", metadata={"help": "JSON dict of HintEncoderConfig overrides for the VMamba hint encoder"})
    hint_target_fill: str = field(default="blank", metadata={"help": "what the hint's target cell holds: blank (the paper) | query (a copy of the query: edits become mostly local maps, which tiny models trained from scratch learn far sooner); stored with the ControlNet"})
    target_channel: bool = field(default=False, metadata={"help": "give the ControlNet a 4th hint channel marking the target cell"})
    controlnet_init: str = field(default="", metadata={"help": "start from this ControlNet .safetensors instead of from_unet"})
    controlnet_zero_init: bool = field(default=True, metadata={"help": "zero-initialise the ControlNet's output convs (and the hint encoder's), so it starts as a no-op on a pretrained UNet; --no-controlnet-zero-init for stacks trained from scratch, where the zeros only delay learning"})
    train_unet: bool = field(default=False, metadata={"help": "train the UNet too (frozen by default)"})
    train_text_encoder: bool = field(default=False, metadata={"help": "train the text encoder too"})
    vae_pretrain_steps: int = field(default=0, metadata={"help": "first train the VAE alone this many steps (from-scratch tiny stacks)"})
    vae_lr: float = field(default=1e-3, metadata={"help": "learning rate of the VAE pretraining stage (cosine decay to 0)"})
    vae_batch_size: int = field(default=0, metadata={"help": "grids per VAE pretraining step (0: batch_size); small batches, more steps learn faster per CPU second"})
    tiny_seed: int = field(default=0, metadata={"help": "seed of the random tiny SD (base_model=tiny)"})
    tiny_unet_config: str = field(default="", metadata={"help": "JSON overrides of gie_core.tiny's UNet config (base_model=tiny)"})
    tiny_vae_config: str = field(default="", metadata={"help": "JSON overrides of gie_core.tiny's VAE config (base_model=tiny)"})
    prediction_type: str = field(default="", metadata={"help": "what the UNet predicts: epsilon | v_prediction | sample; empty keeps the base model's (SD1.5: epsilon). Only change it for UNets trained from scratch"})
    scheduler_config: str = field(default="", metadata={"help": "JSON overrides of the base's noise-scheduler config for training and the exported base, e.g. '{\"rescale_betas_zero_snr\": true, \"timestep_spacing\": \"trailing\"}' (zero terminal SNR: the last timestep is pure noise, as sampling starts). Only for UNets trained from scratch"})
    train_timesteps: str = field(default="", metadata={"help": "train on these timesteps only: 'lo-hi' or a list 't1,t2,...' drawn uniformly, repeats weighing more (e.g. '999,749,499,249', the four a trailing 4-step DDIM visits; '999' with prediction_type sample and a zero-terminal-SNR schedule: one-step regression from the hint, the ceiling probe); empty: all"})
    instruction_dropout: float = field(default=0.05, metadata={"help": "probability of training on an empty instruction (classifier-free guidance)"})

    # --- losses
    outside_weight: float = field(default=0.0, metadata={"help": "L_ldm weight on the known (non-target) cells"})
    esm: bool = field(default=True, metadata={"help": "editing-shift matching loss; --no-esm for the ablation"})
    lambda_esm: float = field(default=0.1, metadata={"help": "weight of L_esm"})
    esm_max_timestep: int = field(default=400, metadata={"help": "ESM only for samples with t below this (x0 is meaningful)"})
    esm_decode: str = field(default="vae", metadata={"help": "how x0 and the known cells it is compared with become pixels: vae (decoder) | latent (one per-batch linear latent->RGB fit, low memory)"})
    esm_embedder: str = field(default="auto", metadata={"help": "image embedding of ESM: clip (--clip-model folder) | colour (parameter-free colour, sharpness and layout statistics, for tiny stacks) | auto (clip when --clip-model is given, colour for base_model=tiny, else an error)"})
    clip_model: str = field(default="", metadata={"help": "local CLIP vision model folder (transformers) for ESM"})
    sam: bool = field(default=True, metadata={"help": "selective area matching loss; --no-sam for the ablation"})
    lambda_sam: float = field(default=0.5, metadata={"help": "weight of L_sam"})
    sam_region: str = field(default="face", metadata={"help": "SAM region (gie_core.regions): face, hair, skin, person, label:<name>, or a combination face+hair"})
    sam_backend: str = field(default="auto", metadata={"help": "SAM region detector: auto (haar for faces without a model, else from --sam-model's config) | haar | mask2former | face_parsing"})
    sam_model: str = field(default="", metadata={"help": "local Mask2Former or face-parsing (SegFormer) model folder for SAM masks"})
    mask_cache_dir: str = field(default="", metadata={"help": "folder caching SAM masks by image content (default: OUTPUT/mask_cache; share one between runs)"})

    # --- optimisation
    learning_rate: float = field(default=1e-5, metadata={"help": "peak learning rate"})
    lr_scheduler: str = field(default="constant", metadata={"help": "diffusers scheduler name: constant, cosine, linear, ..."})
    lr_warmup_steps: int = field(default=0, metadata={"help": "warm-up steps"})
    weight_decay: float = field(default=1e-2, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping (0: off)"})
    use_8bit_adam: bool = field(default=False, metadata={"help": "bitsandbytes 8-bit AdamW (optional dependency)"})
    batch_size: int = field(default=4, metadata={"help": "samples per device per micro-batch"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_steps: int = field(default=1000, metadata={"help": "optimizer steps"})
    time_limit_minutes: float = field(default=0.0, metadata={"help": "stop (checkpoint + export) after this many minutes (0: none)"})
    mixed_precision: str = field(default="no", metadata={"help": "no | fp16 | bf16"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in backward (less memory)"})
    ema: bool = field(default=False, metadata={"help": "keep an exponential moving average of the trained weights (exported when on)"})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA decay"})
    seed: int = field(default=0, metadata={"help": "seed of data order, noise and timesteps"})

    # --- output
    output_dir: str = field(default="runs/instructgie", metadata={"help": "checkpoints, logs, validation images, export"})
    checkpoint_every: int = field(default=500, metadata={"help": "steps between checkpoints (0: only at the end)"})
    keep_checkpoints: int = field(default=2, metadata={"help": "checkpoints kept on disk"})
    resume: str = field(default="", metadata={"help": "continue from: 'latest' (the newest checkpoint in output_dir; an error if there is none), 'auto' (the newest if any, else start from scratch) or a checkpoint folder. Without it, an output_dir that holds checkpoints is an error"})
    validate_every: int = field(default=500, metadata={"help": "steps between validations (0: off)"})
    num_validation: int = field(default=4, metadata={"help": "validation samples (loss and image grid)"})
    validation_inference_steps: int = field(default=20, metadata={"help": "sampling steps of validation images (0: loss only)"})
    log_every: int = field(default=10, metadata={"help": "steps between log lines / TensorBoard points"})
    export_name: str = field(default="controlnet.safetensors", metadata={"help": "exported ControlNet file name in output_dir"})
    export_base: bool = field(default=False, metadata={"help": "also save the (trained) base SD as a diffusers folder output_dir/base"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bars"})

    def training_timesteps(self, num_train_timesteps: int = 1000) -> list[int] | tuple[int, int]:
        """From ``train_timesteps``: ``(lo, hi)`` inclusive for a range (all timesteps when empty),
        or the sorted list of the listed timesteps, repeats kept (drawn uniformly from the list)."""
        text = self.train_timesteps.strip()
        if not text:
            return 0, num_train_timesteps - 1
        try:
            if "-" in text:
                lo, hi = (int(x) for x in text.split("-"))
                ok = 0 <= lo <= hi < num_train_timesteps
                out: list[int] | tuple[int, int] = (lo, hi)
            else:
                out = sorted(int(x) for x in text.split(","))  # a repeat weighs a timestep more
                ok = all(0 <= t < num_train_timesteps for t in out)
            if not ok:
                raise ValueError
        except ValueError:
            raise ValueError(f"train_timesteps={self.train_timesteps!r}: expected 'lo-hi' or 't1,t2,...' with "
                             f"timesteps in [0, {num_train_timesteps})") from None
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> TrainConfig:
        """Raises ValueError naming the first bad option."""
        checks = [
            (self.hint_encoder in ("vmamba", "conv"), "hint_encoder", "vmamba or conv"),
            (self.esm_decode in ("vae", "latent"), "esm_decode", "vae or latent"),
            (self.mixed_precision in ("no", "fp16", "bf16"), "mixed_precision", "no, fp16 or bf16"),
            (self.resize in ("crop", "fit", "stretch"), "resize", "crop, fit or stretch"),
            (self.dedupe in ("hash", "source", "none"), "dedupe", "hash, source or none"),
            (self.hint_target_fill in ("blank", "query"), "hint_target_fill", "blank or query"),
            (self.prediction_type in ("", "epsilon", "v_prediction", "sample"), "prediction_type",
             "empty, epsilon, v_prediction or sample"),
            (self.tile > 0 and self.tile % 8 == 0, "tile", "a positive multiple of 8"),
            (self.k_examples >= 1, "k_examples", ">= 1"),
            (self.batch_size >= 1, "batch_size", ">= 1"),
            (self.vae_batch_size >= 0, "vae_batch_size", ">= 0 (0: batch_size)"),
            (self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", ">= 1"),
            (self.max_steps >= 0, "max_steps", ">= 0"),
            (0 <= self.val_fraction < 1, "val_fraction", "in [0, 1)"),
            (0 <= self.instruction_dropout < 1, "instruction_dropout", "in [0, 1)"),
            (self.learning_rate > 0, "learning_rate", "> 0"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected {expected}")
        if self.esm and self.lambda_esm > 0:
            from .embedders import resolve_esm_embedder

            resolve_esm_embedder(self.esm_embedder, self.clip_model, self.base_model)
        if self.train_timesteps:
            self.training_timesteps()
        for name in ("hint_encoder_config", "tiny_unet_config", "tiny_vae_config", "scheduler_config"):
            text = getattr(self, name)
            if not text:
                continue
            try:
                if not isinstance(json.loads(text), dict):
                    raise ValueError
            except ValueError:
                raise ValueError(f"{name}={text!r}: expected a JSON object") from None
        return self


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path}: not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: expected a mapping of option: value")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"config file {path}: unknown option(s) {unknown}; see instructgie-train --help")
    return data


def preset_path(name: str) -> Path:
    p = PRESETS_DIR / f"{name}.yaml"
    if not p.is_file():
        raise ValueError(f"preset {name!r}: expected one of {list_presets()}")
    return p


def _bool_type(hint) -> bool:
    return hint is bool or hint == "bool"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--option`` per config field (booleans get ``--x`` / ``--no-x``), all defaulting to
    "not given" so presets are only overridden by what the user typed."""
    parser.add_argument("--preset", default=None, help=f"start from a packaged preset: {', '.join(list_presets())}")
    parser.add_argument("--config", default=None, help="YAML file of options (applied after the preset)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        helptext = f"{f.metadata.get('help', '')} (default: {f.default!r})"
        if _bool_type(hints[f.name]):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=helptext)
        else:
            parser.add_argument(flag, dest=f.name, type=hints[f.name], default=None, help=helptext,
                                metavar=f.name.upper())


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merges defaults, preset, config file and explicit options into a validated TrainConfig."""
    values: dict[str, Any] = {}
    if getattr(args, "preset", None):
        values.update(load_yaml(preset_path(args.preset)))
    if getattr(args, "config", None):
        values.update(load_yaml(args.config))
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    return make_config(**values)


def make_config(**values) -> TrainConfig:
    """A validated TrainConfig from keyword values (types coerced as the CLI would)."""
    hints = typing.get_type_hints(TrainConfig)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown training option(s) {unknown}")
    coerced = {}
    for k, v in values.items():
        t = hints[k]
        if t is bool and not isinstance(v, bool):
            raise ValueError(f"{k}={v!r}: expected true or false")
        coerced[k] = t(v) if t in (int, float, str) and v is not None else v
    return TrainConfig(**coerced).validate()

"""The InstructGIE training loop on accelerate.

One optimizer step = ``gradient_accumulation_steps`` micro-batches of ``batch_size`` samples per
process. Sample ``i`` of the dataset depends only on ``(seed, i)``, the sampler hands step ``s`` the
same global indices whatever the process count (at one global batch), and every random draw for a
sample (noise, timestep, VAE posterior sample, instruction dropout) comes from a generator seeded
by ``(seed, i)``. So a resumed run repeats exactly the losses an uninterrupted run would have had
(the checkpoint only needs the step, the weights, the optimizer, the LR scheduler, the EMA and
torch's global RNG), and N processes follow the trajectory of one process at the same global batch
up to floating-point summation order: every loss term is normalised over the global batch.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import threading
import time
import zlib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from gie_core import control_input

from . import checkpoint as ckpt
from .config import TrainConfig
from .embedders import CLIPImageEmbedder, load_esm_embedder, make_random_tiny_clip
from .losses import (
    diffusion_target,
    esm_loss,
    fit_latent_to_rgb,
    latent_to_rgb,
    ldm_loss,
    predicted_x0,
    sam_loss,
    to_latent_mask,
)

log = logging.getLogger("trainer")


# --------------------------------------------------------------------------- models
@dataclass
class SDComponents:
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    noise_scheduler: object


def load_base(cfg: TrainConfig) -> SDComponents:
    """SD1.5 parts from ``cfg.base_model``: ``tiny``, a diffusers folder or a single checkpoint file."""
    src = cfg.base_model
    if src == "tiny":
        from gie_core import tiny

        c = tiny.make_tiny_sd_components(cfg.tiny_seed)
        unet, vae = c["unet"], c["vae"]
        if cfg.tiny_vae_config:
            vae = tiny.make_tiny_vae(cfg.tiny_seed + 1, **json.loads(cfg.tiny_vae_config))
        unet_over = json.loads(cfg.tiny_unet_config) if cfg.tiny_unet_config else {}
        if vae.config.latent_channels != unet.config.in_channels:  # the UNet works on the VAE's latents
            unet_over = {"in_channels": vae.config.latent_channels, "out_channels": vae.config.latent_channels,
                         **unet_over}
        if unet_over:  # same seeds as make_tiny_sd_components, other shapes
            unet = tiny.make_tiny_unet(cfg.tiny_seed, **unet_over)
        return SDComponents(unet, vae, c["text_encoder"], c["tokenizer"],
                            _noise_scheduler(c["scheduler"].config, cfg))
    path = Path(src)
    if not path.exists():
        raise ValueError(f"base_model={src!r}: no such folder or file (expected a local SD1.5 diffusers "
                         "folder, a single .safetensors checkpoint, or 'tiny')")
    from gie_core.loading import load_base as _load_base

    c = _load_base(path)  # a diffusers folder or a single SD1.x file (safetensors; configs shipped)
    return SDComponents(c["unet"], c["vae"], c["text_encoder"], c["tokenizer"],
                        _noise_scheduler(c["scheduler"].config, cfg))


def _noise_scheduler(config, cfg: TrainConfig):
    """The training DDPM scheduler from the base's scheduler config, with ``cfg.prediction_type``
    when given (a from-scratch stack may choose; a pretrained UNet must keep its own)."""
    from diffusers import DDPMScheduler

    over = json.loads(cfg.scheduler_config) if cfg.scheduler_config else {}
    if cfg.prediction_type:
        over["prediction_type"] = cfg.prediction_type
    return DDPMScheduler.from_config(config, **over)


def build_controlnet(cfg: TrainConfig, unet, latent_factor: int = 8):
    """A ControlNet initialised from the UNet's encoder (or from ``cfg.controlnet_init``); its hint
    encoder maps the grid to the latent resolution (``latent_factor``, the VAE's)."""
    from .export import load_controlnet

    if cfg.controlnet_init:
        return load_controlnet(cfg.controlnet_init)
    model = _new_controlnet(cfg, unet, latent_factor)
    if not cfg.controlnet_zero_init:
        reinit_zero_convs(model, cfg.tiny_seed)
    return model


def reinit_zero_convs(model: torch.nn.Module, seed: int = 0) -> list[str]:
    """Gives every all-zero conv of ``model`` (ControlNet's zero convs, the hint encoder's output conv)
    PyTorch's default random init; returns their names. Two zero-initialised layers in a row (hint
    encoder out, then a zero conv) pass no gradient to what lies before them until both have grown:
    protective on a pretrained UNet, only a delay when everything trains from scratch."""
    names = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Conv2d) and not m.weight.detach().any():
                m.reset_parameters()
                names.append(name)
    return names


def _new_controlnet(cfg: TrainConfig, unet, latent_factor: int):
    if cfg.hint_encoder == "vmamba":
        from gie_core.models import VMambaControlNetModel

        hint = json.loads(cfg.hint_encoder_config) if cfg.hint_encoder_config else {}
        if cfg.target_channel:
            hint["use_target_channel"] = True
        if latent_factor != 8:
            hint.setdefault("latent_factor", latent_factor)
        if cfg.hint_target_fill != "blank":
            hint["target_fill"] = cfg.hint_target_fill  # the encoder fills the cell itself
        return VMambaControlNetModel.from_unet(unet, hint_encoder_config=hint or None)
    from diffusers import ControlNetModel

    # diffusers' conv hint encoder halves the size once per width after the first: (16, 32, 96, 256)
    # is SD's factor 8; drop widths from the front for a smaller factor.
    widths = (16, 32, 96, 256)[-(int(math.log2(latent_factor)) + 1):]
    model = ControlNetModel.from_unet(unet, conditioning_channels=4 if cfg.target_channel else 3,
                                      conditioning_embedding_out_channels=widths)
    if cfg.hint_target_fill != "blank":  # saved in config.json; the pipeline fills the hint for it
        model.register_to_config(hint_target_fill=cfg.hint_target_fill)
    return model


def make_tiny_clip(seed: int = 0):
    """A randomly initialised tiny CLIP (loader and evaluation plumbing tests; never ESM)."""
    return make_random_tiny_clip(seed)


def load_clip(spec: str, seed: int = 0) -> CLIPImageEmbedder:
    """A CLIP image embedder from a local folder, or ``'tiny'``: a *random* tiny CLIP, which only
    the evaluation's plumbing tests use (ESM refuses it: see ``trainer.embedders``)."""
    if spec == "tiny":
        return CLIPImageEmbedder(make_random_tiny_clip(seed))
    return CLIPImageEmbedder.from_folder(spec)


# --------------------------------------------------------------------------- helpers
def step_generator(seed: int, *parts: int) -> torch.Generator:
    """A CPU generator seeded by ``seed`` and the step coordinates (stable across processes)."""
    return torch.Generator().manual_seed(zlib.crc32(json.dumps([seed, *parts]).encode()) & 0x7FFFFFFF)


class SampleRandom:
    """The random draws of a micro-batch, one generator per sample seeded by ``(seed, dataset index)``:
    a sample gets the same noise, timestep and dropout whichever process or micro-batch it lands in.
    Draws come in a fixed order per sample (dropout, timestep, posterior sample, noise)."""

    def __init__(self, seed: int, indices):
        self.gens = [step_generator(seed, 101, int(i)) for i in indices]

    def rand(self) -> torch.Tensor:
        return torch.stack([torch.rand((), generator=g) for g in self.gens])

    def randint(self, high: int) -> torch.Tensor:
        return torch.stack([torch.randint(0, high, (), generator=g) for g in self.gens])

    def randn(self, shape) -> torch.Tensor:
        if shape[0] != len(self.gens):
            raise ValueError(f"randn: batch of {shape[0]} for {len(self.gens)} samples")
        return torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in self.gens])


class BatchRandom:
    """The same interface drawing a whole batch from one generator (validation, tests, benchmarks)."""

    def __init__(self, gen: torch.Generator, batch: int):
        self.gen, self.b = gen, batch

    def rand(self) -> torch.Tensor:
        return torch.rand(self.b, generator=self.gen)

    def randint(self, high: int) -> torch.Tensor:
        return torch.randint(0, high, (self.b,), generator=self.gen)

    def randn(self, shape) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=self.gen)


class StepSampler(torch.utils.data.Sampler):
    """Dataset indices for this process from optimizer step ``start_step`` on.

    Index of sample ``j`` of micro-batch ``m`` of step ``s`` on process ``r`` (of ``W``):
    ``((s·A + m)·W + r)·B + j`` — disjoint across processes, the same whatever step a run (re)starts
    from, and for a given global batch ``W·B`` the same set per micro-batch whatever ``W`` is."""

    def __init__(self, start_step: int, end_step: int, batch: int, accum: int, world: int, rank: int):
        self.start, self.end, self.b, self.a, self.w, self.r = start_step, end_step, batch, accum, world, rank

    def __iter__(self):
        for s in range(self.start, self.end):
            for m in range(self.a):
                base = ((s * self.a + m) * self.w + self.r) * self.b
                yield from range(base, base + self.b)

    def __len__(self):
        return max(0, self.end - self.start) * self.a * self.b


def _launched_without_accelerators() -> bool:
    """A multi-process launch (torchrun / accelerate launch --multi_gpu) on a machine without GPUs:
    accelerate must be told it is on the CPU, or it sees no distribution at all and every process
    trains on its own (gloo is then the backend)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    xpu = getattr(torch, "xpu", None)
    return not torch.cuda.is_available() and not (xpu is not None and xpu.is_available())


class _StopSignals:
    """While active, SIGINT and SIGTERM only set ``received`` (the signal number); the training loop
    checkpoints and stops after the current step. A second signal gets the previous handler, so a
    stuck run can still be interrupted. Outside the main thread (no handlers possible) it is inert."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        self.received = self.received or signum
        signal.signal(signum, self._previous.get(signum) or signal.SIG_DFL)

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.getsignal(s)
                signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._previous.items():
            signal.signal(s, h or signal.SIG_DFL)
        return False


class Trainer:
    """Holds models, data and optimizer; :meth:`train` runs the loop (see the module docstring)."""

    def __init__(self, cfg: TrainConfig, accelerator=None, on_step: Callable[[int, dict], None] | None = None,
                 datasets: tuple | None = None):
        self.cfg = cfg.validate()
        self.on_step = on_step
        self._datasets = datasets  # (train_set, val_set) from another source; see build_datasets
        self.out = Path(cfg.output_dir)
        if accelerator is None:
            from accelerate import Accelerator

            accelerator = Accelerator(mixed_precision=cfg.mixed_precision, log_with="tensorboard",
                                      project_dir=str(self.out / "logs"), cpu=_launched_without_accelerators())
        if str(accelerator.distributed_type).split(".")[-1] in ("DEEPSPEED", "FSDP"):
            # Their optimizer state is sharded; this trainer's pickle-free checkpoints hold it whole.
            raise ValueError(f"{accelerator.distributed_type}: not supported (checkpoints hold the whole optimizer "
                             "state); use DDP: trainer/launch/*.yaml, sized in docs/trainer.md")
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched != accelerator.num_processes:  # each process would train alone on the full batch
            raise ValueError(f"launched as {launched} processes but accelerate runs {accelerator.num_processes}: "
                             "start multi-process runs with accelerate launch (see docs/trainer.md)")
        self.acc = accelerator
        self.device = accelerator.device
        self.history: list[dict] = []

    # ---- setup
    def setup(self) -> Trainer:
        cfg, acc = self.cfg, self.acc
        resume_from = ckpt.resolve(cfg.resume, self.out)  # a bad --resume fails before anything loads
        self.out.mkdir(parents=True, exist_ok=True)
        from .data import incontext
        from .data.dataset import RegionMaskProvider, collate

        masks = None
        # Procedural in-context edits carry their own edit-region masks; other data gets a detector's.
        if cfg.sam and cfg.lambda_sam > 0 and not incontext.is_incontext_spec(cfg.data):
            masks = RegionMaskProvider(cfg.sam_region, cfg.sam_backend, cfg.sam_model or None,
                                       cache_dir=cfg.mask_cache_dir or str(self.out / "mask_cache"))
            masks.check()  # a detector that cannot work stops the run here, not as SAM ≡ 0 later
            log.info("SAM masks: %s, cached in %s", masks.describe(), masks.cache_dir)
        self.region_masks = masks
        self.collate = collate
        self.train_set, self.val_set = self.build_datasets(masks)
        if acc.is_main_process:
            (self.out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
            (self.out / "data_report.json").write_text(json.dumps(self.report.to_dict(), indent=1))

        sd = load_base(cfg)
        self.sd = sd
        self.vae_factor = 2 ** (len(sd.vae.config.block_out_channels) - 1)
        self.controlnet = build_controlnet(cfg, sd.unet, self.vae_factor)
        # Fixed by the model: target channel or not, and whether the hint is filled here (a VMamba
        # encoder fills its own input).
        self.control_spec = control_input.spec_for(self.controlnet)
        wdtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.mixed_precision]
        if wdtype != torch.float32 and self.device.type == "cpu":
            # CPU autocast leaves group_norm's parameters alone: half-precision frozen weights meet
            # float32 activations there and fail. Frozen parts stay float32; matmuls still run in bf16.
            wdtype = torch.float32
        self.weight_dtype = wdtype
        self.trained: dict[str, torch.nn.Module] = {"controlnet": self.controlnet}
        if cfg.train_unet:
            self.trained["unet"] = sd.unet
        if cfg.train_text_encoder:
            self.trained["text_encoder"] = sd.text_encoder
        for name, m in (("unet", sd.unet), ("text_encoder", sd.text_encoder), ("vae", sd.vae)):
            if name not in self.trained:
                m.requires_grad_(False).eval()
        for m in self.trained.values():
            m.requires_grad_(True).train()
        if cfg.gradient_checkpointing:
            self.controlnet.enable_gradient_checkpointing()
            sd.unet.enable_gradient_checkpointing()  # grads flow through the frozen UNet's activations too
            if cfg.esm and cfg.esm_decode == "vae":
                sd.vae.enable_gradient_checkpointing()
        self.esm_embedder = None
        if cfg.esm and cfg.lambda_esm > 0:
            # Frozen, like the UNet: in the training precision (a CLIP ViT-L in fp32 would double its cost).
            self.esm_embedder = load_esm_embedder(cfg.esm_embedder, cfg.clip_model, cfg.base_model).to(
                self.device, dtype=wdtype)
            log.info("ESM embedder: %s", type(self.esm_embedder).__name__)

        params = [p for m in self.trained.values() for p in m.parameters() if p.requires_grad]
        self.optimizer = self._make_optimizer(params)
        from diffusers.optimization import get_scheduler

        self.lr_scheduler = get_scheduler(cfg.lr_scheduler, self.optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                                          num_training_steps=max(cfg.max_steps, 1))
        self.ema = None
        if cfg.ema:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(params, decay=cfg.ema_decay)

        # The VAE pretraining stage (from-scratch stacks) runs before the ControlNet wraps anything.
        self._vae_stage()
        names = list(self.trained)
        prepared = acc.prepare(*[self.trained[n] for n in names], self.optimizer)
        self.wrapped = dict(zip(names, prepared[:-1]))
        self.optimizer = prepared[-1]
        for name, m in (("unet", sd.unet), ("text_encoder", sd.text_encoder), ("vae", sd.vae)):
            if name not in self.trained:
                m.to(self.device) if wdtype == torch.float32 else m.to(self.device, dtype=wdtype)
        if self.ema is not None:
            self.ema.to(self.device)
        self.start_step = 0
        path = resume_from
        if path is not None:
            state = ckpt.load(path, {n: acc.unwrap_model(m) for n, m in self.wrapped.items()}, self.optimizer,
                              self.lr_scheduler, self.ema)
            self.start_step = int(state["step"])
            log.info("resumed from %s at step %d", path, self.start_step)
        elif cfg.resume == "auto":
            log.info("resume=auto: no checkpoint in %s, starting from step 0", self.out)
        if acc.is_main_process:
            # What a killed run logged after its last checkpoint is repeated now: drop it.
            ckpt.trim_jsonl(self.out / "losses.jsonl", self.start_step)
        return self

    def build_datasets(self, region_masks=None):
        """``(train_set, val_set)``: map-style datasets whose item ``i`` is a dict like
        :class:`~trainer.data.dataset.InContextDataset`'s (``grid``, ``hint``, ``target_mask``,
        ``region_mask``, ``instruction``, ``family``, ``index``) and depends only on ``i``. Sets
        ``self.report`` (a DataReport). Datasets given to the constructor (``datasets=``) are used as
        they are; override this for another source."""
        from .data import incontext
        from .data.dataset import DataReport, InContextDataset, prepare_groups, unify_instructions

        cfg = self.cfg
        if self._datasets is not None:
            self.train_groups, self.val_groups, self.report = [], [], DataReport()
            return self._datasets
        if incontext.is_incontext_spec(cfg.data):  # procedural in-context edits, drawn fresh per index
            self.train_groups, self.val_groups, self.report = [], [], DataReport()
            unify = lambda text: unify_instructions([text], cfg.liu, cfg.liu_backend)[0]  # noqa: E731
            return (incontext.InContextEditDataset(cfg.data, cfg.k_examples, cfg.tile, cfg.seed, unify,
                                                   resize=cfg.resize),
                    incontext.InContextEditDataset(cfg.data, cfg.k_examples, cfg.tile, cfg.seed + 1, unify,
                                                   resize=cfg.resize))
        self.train_groups, self.val_groups, self.report = prepare_groups(
            cfg.data, fmt=cfg.data_format, liu=cfg.liu, liu_backend=cfg.liu_backend, val_fraction=cfg.val_fraction,
            seed=cfg.seed, min_side=cfg.min_side, verify=cfg.verify, include_unseen=cfg.include_unseen,
            progress=cfg.progress and self.acc.is_main_process, dedupe=cfg.dedupe)
        train = InContextDataset(self.train_groups, cfg.k_examples, cfg.tile, cfg.seed, resize=cfg.resize,
                                 region_masks=region_masks, min_side=cfg.min_side)
        val = InContextDataset(self.val_groups or self.train_groups, cfg.k_examples, cfg.tile, cfg.seed + 1,
                               resize=cfg.resize, region_masks=region_masks, min_side=cfg.min_side)
        return train, val

    def _make_optimizer(self, params):
        cfg = self.cfg
        if cfg.use_8bit_adam:
            try:
                import bitsandbytes as bnb
            except ImportError:
                raise ValueError("use_8bit_adam: bitsandbytes is not installed (pip install bitsandbytes), "
                                 "or drop --use-8bit-adam") from None
            return bnb.optim.AdamW8bit(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

    # ---- VAE pretraining (tiny stacks trained from scratch)
    def _vae_stage(self):
        cfg, vae = self.cfg, self.sd.vae
        if cfg.vae_pretrain_steps <= 0:
            return
        done = self.out / "vae_pretrained"
        if (done / "config.json").is_file():
            from diffusers import AutoencoderKL

            saved = AutoencoderKL.from_pretrained(done)
            vae.load_state_dict(saved.state_dict())
            # The latent scale was measured after pretraining and lives in the config, not the weights.
            vae.register_to_config(scaling_factor=saved.config.scaling_factor)
            log.info("VAE pretraining: reusing %s (scaling_factor %.4f)", done, vae.config.scaling_factor)
            return
        from tqdm.auto import tqdm

        vae.to(self.device).train().requires_grad_(True)
        started = time.monotonic()
        opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
        # Cosine decay to zero: the last steps at a small rate are worth several dB of reconstruction.
        n = cfg.vae_pretrain_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, n) / n)))
        bar = tqdm(range(cfg.vae_pretrain_steps), desc="VAE pretraining", disable=not cfg.progress)
        vb = cfg.vae_batch_size or cfg.batch_size
        for s in bar:
            batch = self.collate([self.train_set[10**8 + s * vb + j] for j in range(vb)])
            x = batch["grid"].to(self.device) * 2 - 1
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample(generator=step_generator(cfg.seed, -1, s))).sample
            kl = post.kl().mean() / x[0].numel()
            loss = F.mse_loss(rec, x) + 1e-4 * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        vae.eval().requires_grad_(False)
        # A fresh VAE's latents have their own scale: set scaling_factor = 1/std, as SD's was derived,
        # so the diffusion sees unit-variance latents.
        with torch.no_grad():
            grid = self.collate([self.train_set[10**9 - 1 - j] for j in range(8)])["grid"].to(self.device)
            lat = vae.encode(grid * 2 - 1).latent_dist.mean
            rec = ((vae.decode(lat).sample + 1) / 2).clamp(0, 1)
            # The autoencoder bounds every later edit's quality: report its reconstruction PSNR.
            psnr = float(10 * torch.log10(1 / F.mse_loss(rec, grid).clamp_min(1e-10)))
        vae.register_to_config(scaling_factor=float(1.0 / lat.std().clamp_min(1e-3)))
        log.info("VAE pretraining done: reconstruction PSNR %.2f dB, scaling_factor %.4f", psnr,
                 vae.config.scaling_factor)
        if self.acc.is_main_process:
            vae.save_pretrained(done)
            ckpt.share_like_umask(done)
            (done / "report.json").write_text(json.dumps({
                "steps": cfg.vae_pretrain_steps, "batch_size": vb, "seconds": round(time.monotonic() - started, 1),
                "reconstruction_psnr_db": round(psnr, 3), "scaling_factor": vae.config.scaling_factor}, indent=1))

    # ---- one step
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tok = self.sd.tokenizer
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids.to(self.device)
        te = self.wrapped.get("text_encoder", self.sd.text_encoder)
        ctx = nullcontext() if "text_encoder" in self.trained else torch.no_grad()
        with ctx:
            return te(ids)[0]

    @torch.no_grad()
    def encode_grid(self, grid: torch.Tensor, hint: torch.Tensor, target_mask_latent: torch.Tensor,
                    rng: SampleRandom | BatchRandom | None) -> torch.Tensor:
        """Scaled clean latents of a batch: the target cell sampled from the VAE posterior of the full
        grid, the known cells as the pipeline gives them — the mode of the hint's encoding (the grid
        with the target blanked). Encoded from the full grid, their latents near the target would
        carry some of the answer (the encoder sees across cell borders), which the model learns to
        read during training and never finds at inference. ``rng=None``: the posterior's mode."""
        vae = self.sd.vae
        vae_dtype = next(vae.parameters()).dtype
        post = vae.encode((grid * 2 - 1).to(vae_dtype)).latent_dist
        target = post.mode().float()
        if rng is not None:
            eps = rng.randn(post.mean.shape).to(self.device, post.mean.dtype)
            target = (post.mean + post.std * eps).float()
        known = vae.encode((hint[:, :3] * 2 - 1).to(vae_dtype)).latent_dist.mode().float()
        m = target_mask_latent
        return (m * target + (1 - m) * known) * vae.config.scaling_factor

    def compute_losses(self, batch: dict, rng: SampleRandom | BatchRandom | torch.Generator, train: bool = True,
                       timesteps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """All loss terms of one micro-batch (``total`` is the weighted sum). ``rng``: the batch's
        random draws (a plain generator draws the whole batch from it)."""
        cfg, sd = self.cfg, self.sd
        grid = batch["grid"].to(self.device)
        hint = batch["hint"].to(self.device)
        b = grid.shape[0]
        if isinstance(rng, torch.Generator):
            rng = BatchRandom(rng, b)
        texts = list(batch["instruction"])
        if train and cfg.instruction_dropout > 0:
            drop = rng.rand() < cfg.instruction_dropout
            texts = ["" if d else t for d, t in zip(drop.tolist(), texts)]
        n_t = sd.noise_scheduler.config.num_train_timesteps
        if timesteps is None:
            choice = cfg.training_timesteps(n_t)
            if isinstance(choice, tuple):  # a range lo..hi
                t = choice[0] + rng.randint(choice[1] - choice[0] + 1)
            else:  # a list, repeats weighing more
                t = torch.tensor(choice)[rng.randint(len(choice))]
        else:
            t = timesteps.cpu()
        t = t.to(self.device)
        f = self.vae_factor
        tmask = to_latent_mask(batch["target_mask"].to(self.device), f)
        latents = self.encode_grid(grid, hint, tmask, rng)
        noise = rng.randn(latents.shape).to(self.device)
        noisy = sd.noise_scheduler.add_noise(latents, noise, t)
        ctx_emb = self.encode_text(texts)
        cond = control_input.build(hint, batch["target_mask"].to(self.device),
                                   target_channel=self.control_spec.target_channel, fill=self.control_spec.fill)
        cn = self.wrapped["controlnet"]
        unet = self.wrapped.get("unet", sd.unet)
        with self.acc.autocast():
            down, mid = cn(noisy, t, encoder_hidden_states=ctx_emb, controlnet_cond=cond, return_dict=False)
            pred = unet(noisy, t, encoder_hidden_states=ctx_emb, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid, return_dict=False)[0]
        pred = pred.float()
        target = diffusion_target(latents, noise, t, sd.noise_scheduler).float()
        out = {"ldm": ldm_loss(pred, target, tmask, cfg.outside_weight)}
        total = out["ldm"]
        if cfg.sam and cfg.lambda_sam > 0:
            rmask = to_latent_mask(batch["region_mask"].to(self.device), f) * tmask
            out["sam"] = self._global_sam(pred, target, rmask)
            total = total + cfg.lambda_sam * out["sam"]
        if self.esm_embedder is not None:
            rgb_map = None
            if cfg.esm_decode == "latent":  # fitted by every process on the global batch (a collective)
                rgb_map = fit_latent_to_rgb(latents, grid, self._all_reduce_sum if self.acc.num_processes > 1 else None)
            out["esm"] = self._esm(grid, latents, noisy, pred, t, rgb_map)
            total = total + cfg.lambda_esm * out["esm"]
        out["total"] = total
        return out

    def _global_sam(self, pred, target, rmask) -> torch.Tensor:
        """SAM normalised by the region area of the *global* batch: each process's share, scaled so
        that the processes' mean (what DDP averages gradients to) is the one-process loss."""
        world = self.acc.num_processes
        if world == 1:
            return sam_loss(pred, target, rmask)
        local = rmask.float().sum()
        area = self.acc.reduce(local.detach().clone(), reduction="sum")
        per_rank = sam_loss(pred, target, rmask) * local / area.clamp_min(1e-8)
        return per_rank * world

    def _cells(self):
        from gie_core.visual_prompt import GridLayout

        return GridLayout(tile=self.cfg.tile, num_examples=self.cfg.k_examples, resize=self.cfg.resize,
                          placements=[]).cells

    def _all_reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        return self.acc.reduce(x.contiguous().clone(), reduction="sum")

    def _esm(self, grid, latents, noisy, pred, t, rgb_map=None) -> torch.Tensor:
        cfg, sd, f = self.cfg, self.sd, self.vae_factor
        sel = (t < cfg.esm_max_timestep).nonzero().flatten()
        if sel.numel() == 0:
            return pred.sum() * 0.0  # stays in the graph, so every process runs the same backward
        cells = self._cells()

        def latent_cell(z, name):
            top, left, h, w = cells[name]
            return z[..., top // f:(top + h) // f, left // f:(left + w) // f]

        x0 = predicted_x0(noisy[sel], pred[sel], t[sel], sd.noise_scheduler)
        # x̂0's target cell and the known cells it is compared with take the same road to pixels
        # (the clean latents the model was given, decoded the same way): otherwise the decoder's
        # blur or colour error would be part of every "edit direction".
        if cfg.esm_decode == "vae":
            vae_dtype = next(sd.vae.parameters()).dtype

            def decode(z):
                img = sd.vae.decode((z / sd.vae.config.scaling_factor).to(vae_dtype)).sample.float()
                return ((img + 1) / 2).clamp(0, 1)
        else:
            W, bias = rgb_map if rgb_map is not None else fit_latent_to_rgb(latents, grid)

            def decode(z):
                return latent_to_rgb(z, W, bias)

        k = cfg.k_examples
        names = ["query"] + [f"example{i}_before" for i in range(k)] + [f"example{i}_after" for i in range(k)]
        e_pred = self.esm_embedder(decode(latent_cell(x0, "target")))
        with torch.no_grad():
            clean = latents[sel]
            refs = decode(torch.cat([latent_cell(clean, n) for n in names]))
            e_ref = self.esm_embedder(refs).view(len(names), sel.numel(), -1)
            e_q, e_b, e_a = e_ref[0], e_ref[1:1 + k].transpose(0, 1), e_ref[1 + k:].transpose(0, 1)
        # Mean over the selected samples, scaled by their share so the term's expected size does not
        # jump with how many samples of a batch fall under the threshold.
        return esm_loss(e_pred, e_q, e_a, e_b) * (sel.numel() / t.numel())

    # ---- loop
    def train(self) -> dict:
        """Runs from the start (or resumed) step to ``max_steps``; exports and returns a summary.

        SIGINT / SIGTERM (a scheduler's plain ``kill``) finish the current step, write a checkpoint
        and return with ``interrupted`` set (no export); a second signal acts as usual."""
        with _StopSignals() as signals:
            return self._train(signals)

    def _train(self, signals: _StopSignals) -> dict:
        from tqdm.auto import tqdm

        cfg, acc = self.cfg, self.acc
        if acc.is_main_process:
            # purge_step: TensorBoard drops what a killed run logged after the checkpoint resumed from.
            acc.init_trackers("instructgie", config={k: v for k, v in cfg.to_dict().items()
                                                     if isinstance(v, (int, float, str, bool))},
                              init_kwargs={"tensorboard": {"purge_step": self.start_step}})
        sampler = StepSampler(self.start_step, cfg.max_steps, cfg.batch_size, cfg.gradient_accumulation_steps,
                              acc.num_processes, acc.process_index)
        loader = torch.utils.data.DataLoader(self.train_set, batch_size=cfg.batch_size, sampler=sampler,
                                             collate_fn=self.collate, num_workers=cfg.num_workers)
        it = iter(loader)
        bar = tqdm(total=cfg.max_steps, initial=self.start_step, desc="training",
                   disable=not (cfg.progress and acc.is_main_process))
        t0 = time.monotonic()
        step = self.start_step
        params = [p for m in self.wrapped.values() for p in m.parameters() if p.requires_grad]
        stopped_early, interrupted = False, None
        while step < cfg.max_steps:
            accum: dict[str, torch.Tensor] = {}
            for micro in range(cfg.gradient_accumulation_steps):
                batch = next(it)
                rng = SampleRandom(cfg.seed, batch["index"].tolist())
                with contextlib.ExitStack() as no_sync:
                    if micro < cfg.gradient_accumulation_steps - 1:  # gradients are averaged once per step
                        for m in self.wrapped.values():
                            no_sync.enter_context(acc.no_sync(m))
                    losses = self.compute_losses(batch, rng)
                    if not torch.isfinite(losses["total"]):
                        raise FloatingPointError(f"step {step}: loss is {losses['total'].item()} "
                                                 f"(terms: { {k: v.item() for k, v in losses.items()} }); "
                                                 "lower the learning rate or use bf16 instead of fp16")
                    acc.backward(losses["total"] / cfg.gradient_accumulation_steps)
                for k, v in losses.items():
                    accum[k] = accum.get(k, 0.0) + v.detach().float() / cfg.gradient_accumulation_steps
            if cfg.max_grad_norm > 0:
                acc.clip_grad_norm_(params, cfg.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.step(params)
            step += 1
            rec = {"step": step, **self._global_means(accum), "lr": self.lr_scheduler.get_last_lr()[0]}
            self.history.append(rec)
            self._log_step(rec)
            bar.update(1)
            bar.set_postfix(loss=f"{rec['total']:.4f}")
            if cfg.validate_every and step % cfg.validate_every == 0:
                self.validate(step)
            out_of_time = cfg.time_limit_minutes > 0 and time.monotonic() - t0 > cfg.time_limit_minutes * 60
            # Every process must stop at the same step: a signal (or the clock) may reach one first.
            stop = self._agree_max(100 + signals.received if signals.received else int(out_of_time))
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.max_steps or stop:
                self.save_checkpoint(step, rec["total"])
            if self.on_step is not None:
                self.on_step(step, rec)
            if stop > 1:
                interrupted = signal.Signals(stop - 100).name
                log.warning("%s received: checkpoint written at step %d; continue with --resume latest",
                            interrupted, step)
                break
            if stop == 1:
                log.info("time limit of %.1f minutes reached at step %d", cfg.time_limit_minutes, step)
                stopped_early = True
                break
        bar.close()
        export = self.export() if acc.is_main_process and interrupted is None else None
        acc.end_training()
        return {"steps": step, "stopped_early": stopped_early, "interrupted": interrupted, "history": self.history,
                "export": export, "data": self.report.to_dict(),
                "bad_images_during_training": sorted(getattr(self.train_set, "bad", ())),
                "sam_masks": dict(self.region_masks.stats) if self.region_masks is not None else None}

    def _global_means(self, accum: dict[str, torch.Tensor]) -> dict[str, float]:
        """This step's loss terms averaged over all processes (the global batch's losses)."""
        names = sorted(accum)
        vals = torch.stack([torch.as_tensor(accum[k], dtype=torch.float32) for k in names]).to(self.device)
        if self.acc.num_processes > 1:
            vals = self.acc.reduce(vals, reduction="mean")
        return {k: round(float(v), 8) for k, v in zip(names, vals.cpu().tolist())}

    def _agree_max(self, value: int) -> int:
        """The largest ``value`` over all processes (each process's own when alone)."""
        if self.acc.num_processes == 1:
            return int(value)
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item())

    def _log_step(self, rec: dict) -> None:
        """Appends ``rec`` to ``losses.jsonl`` and TensorBoard (main process only)."""
        if not self.acc.is_main_process:
            return
        with (self.out / "losses.jsonl").open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        if rec["step"] % self.cfg.log_every == 0 or rec["step"] == self.cfg.max_steps:
            self.acc.log({f"train/{k}": v for k, v in rec.items() if k != "step"}, step=rec["step"])

    def save_checkpoint(self, step: int, last_loss: float):
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            ckpt.save(self.out, step, {n: self.acc.unwrap_model(m) for n, m in self.wrapped.items()},
                      self.optimizer, self.lr_scheduler, self.ema,
                      extra={"last_loss": last_loss, "config": self.cfg.to_dict()}, keep=self.cfg.keep_checkpoints)
        self.acc.wait_for_everyone()

    # ---- validation
    @torch.no_grad()
    def validate(self, step: int) -> dict:
        """Validation loss on fixed samples and timesteps; an image grid when a pipeline is available."""
        cfg = self.cfg
        n = max(1, cfg.num_validation)
        batch = self.collate([self.val_set[i] for i in range(n)])
        n_t = self.sd.noise_scheduler.config.num_train_timesteps
        t = torch.linspace(0, n_t - 1, n).long()
        losses = self.compute_losses(batch, step_generator(cfg.seed, -2), train=False, timesteps=t)
        rec = {f"val/{k}": v.item() for k, v in losses.items()}
        if self.acc.is_main_process:
            self.acc.log(rec, step=step)
            if cfg.validation_inference_steps > 0:
                try:
                    from .validation import validation_images

                    validation_images(self, batch, step)
                except ImportError as e:  # the editing pipeline is optional for training
                    log.info("validation images skipped: %s", e)
        return rec

    # ---- export
    def export(self) -> str:
        from .export import save_controlnet

        model = self.acc.unwrap_model(self.wrapped["controlnet"])
        params = [p for m in self.wrapped.values() for p in m.parameters() if p.requires_grad]
        if self.ema is not None:
            self.ema.store(params)
            self.ema.copy_to(params)
        try:
            # The unified instructions it learnt: inference snaps new wordings onto them.
            bank = sorted(set(self.train_set.instructions()) | set(self.val_set.instructions())) if self.cfg.liu else None
            path = save_controlnet(model, self.out / self.cfg.export_name,
                                   {"trainer_config": json.dumps(self.cfg.to_dict())}, instruction_bank=bank)
            if self.cfg.export_base or self.cfg.train_unet or self.cfg.train_text_encoder \
                    or self.cfg.vae_pretrain_steps > 0:
                self.save_base(self.out / "base")
        finally:
            if self.ema is not None:
                self.ema.restore(params)
        log.info("exported %s", path)
        return str(path)

    def save_base(self, folder: Path):
        """The (possibly trained) base SD as a diffusers folder."""
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        unwrap = self.acc.unwrap_model
        pipe = StableDiffusionPipeline(
            vae=self.sd.vae, text_encoder=unwrap(self.wrapped.get("text_encoder", self.sd.text_encoder)),
            tokenizer=self.sd.tokenizer, unet=unwrap(self.wrapped.get("unet", self.sd.unet)),
            scheduler=DDIMScheduler.from_config(self.sd.noise_scheduler.config), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
        pipe.save_pretrained(str(folder), safe_serialization=True)
        ckpt.share_like_umask(folder)


def train(cfg: TrainConfig, on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Builds a :class:`Trainer` for ``cfg`` and runs it; returns the summary dict."""
    return Trainer(cfg, on_step=on_step).setup().train()

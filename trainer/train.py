"""The InstructGIE training loop on accelerate.

One optimizer step = ``gradient_accumulation_steps`` micro-batches of ``batch_size`` samples per
process. Every random draw of a step (noise, timesteps, VAE posterior samples, instruction dropout)
comes from a generator seeded by ``(seed, step, micro-batch, process)`` and sample ``i`` of the
dataset depends only on ``(seed, i)``, so a resumed run repeats exactly the losses an uninterrupted
run would have had: the checkpoint only needs the step, the weights, the optimizer, the LR
scheduler, the EMA and torch's global RNG (for any dropout).
"""
from __future__ import annotations

import json
import logging
import math
import time
import zlib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from gie_core.visual_prompt import fill_target_with_query

from . import checkpoint as ckpt
from .config import TrainConfig
from .losses import (
    CLIPImageEmbedder,
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

    if cfg.prediction_type:
        return DDPMScheduler.from_config(config, prediction_type=cfg.prediction_type)
    return DDPMScheduler.from_config(config)


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
    """A random tiny CLIP vision model (tests and from-scratch tiny stacks: random conv features
    still measure how an edit moves an image, which is all ESM asks of them)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, projection_dim=32))


def load_clip(spec: str, seed: int = 0) -> CLIPImageEmbedder:
    if spec == "tiny":
        return CLIPImageEmbedder(make_tiny_clip(seed))
    return CLIPImageEmbedder.from_folder(spec)


# --------------------------------------------------------------------------- helpers
def step_generator(seed: int, *parts: int) -> torch.Generator:
    """A CPU generator seeded by ``seed`` and the step coordinates (stable across processes)."""
    return torch.Generator().manual_seed(zlib.crc32(json.dumps([seed, *parts]).encode()) & 0x7FFFFFFF)


class StepSampler(torch.utils.data.Sampler):
    """Dataset indices for this process from optimizer step ``start_step`` on.

    Index of sample ``j`` of micro-batch ``m`` of step ``s`` on process ``r`` (of ``W``):
    ``((s·A + m)·W + r)·B + j`` — disjoint across processes, and the same whatever step a run
    (re)starts from."""

    def __init__(self, start_step: int, end_step: int, batch: int, accum: int, world: int, rank: int):
        self.start, self.end, self.b, self.a, self.w, self.r = start_step, end_step, batch, accum, world, rank

    def __iter__(self):
        for s in range(self.start, self.end):
            for m in range(self.a):
                base = ((s * self.a + m) * self.w + self.r) * self.b
                yield from range(base, base + self.b)

    def __len__(self):
        return max(0, self.end - self.start) * self.a * self.b


class Trainer:
    """Holds models, data and optimizer; :meth:`train` runs the loop (see the module docstring)."""

    def __init__(self, cfg: TrainConfig, accelerator=None, on_step: Callable[[int, dict], None] | None = None):
        self.cfg = cfg.validate()
        self.on_step = on_step
        self.out = Path(cfg.output_dir)
        if accelerator is None:
            from accelerate import Accelerator

            accelerator = Accelerator(mixed_precision=cfg.mixed_precision, log_with="tensorboard",
                                      project_dir=str(self.out / "logs"))
        self.acc = accelerator
        self.device = accelerator.device
        self.history: list[dict] = []

    # ---- setup
    def setup(self) -> Trainer:
        cfg, acc = self.cfg, self.acc
        self.out.mkdir(parents=True, exist_ok=True)
        from .data.dataset import InContextDataset, RegionMaskProvider, collate, prepare_groups

        self.train_groups, self.val_groups, self.report = prepare_groups(
            cfg.data, fmt=cfg.data_format, liu=cfg.liu, liu_backend=cfg.liu_backend, val_fraction=cfg.val_fraction,
            seed=cfg.seed, min_side=cfg.min_side, verify=cfg.verify, include_unseen=cfg.include_unseen,
            progress=cfg.progress and acc.is_main_process)
        if acc.is_main_process:
            (self.out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
            (self.out / "data_report.json").write_text(json.dumps(self.report.to_dict(), indent=1))
        masks = RegionMaskProvider(cfg.sam_region, cfg.sam_backend,
                                   cache_dir=cfg.mask_cache_dir or str(self.out / "mask_cache")) if cfg.sam else None
        self.collate = collate
        self.train_set = InContextDataset(self.train_groups, cfg.k_examples, cfg.tile, cfg.seed,
                                          resize=cfg.resize, region_masks=masks, min_side=cfg.min_side)
        self.val_set = InContextDataset(self.val_groups or self.train_groups, cfg.k_examples, cfg.tile,
                                        cfg.seed + 1, resize=cfg.resize, region_masks=masks, min_side=cfg.min_side)

        sd = load_base(cfg)
        self.sd = sd
        self.vae_factor = 2 ** (len(sd.vae.config.block_out_channels) - 1)
        self.controlnet = build_controlnet(cfg, sd.unet, self.vae_factor)
        from gie_core.pipeline import hint_target_fill_outside_model

        # Fixed by the model: a VMamba encoder fills its own input, a plain ControlNet gets it filled here.
        self.hint_fill = hint_target_fill_outside_model(self.controlnet)
        wdtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.mixed_precision]
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
        self.clip = load_clip(cfg.clip_model, cfg.seed).to(self.device) if cfg.esm and cfg.lambda_esm > 0 else None

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
        path = ckpt.resolve(cfg.resume, self.out)
        if path is not None:
            state = ckpt.load(path, {n: acc.unwrap_model(m) for n, m in self.wrapped.items()}, self.optimizer,
                              self.lr_scheduler, self.ema)
            self.start_step = int(state["step"])
            log.info("resumed from %s at step %d", path, self.start_step)
        return self

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

    def compute_losses(self, batch: dict, gen: torch.Generator, train: bool = True,
                       timesteps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """All loss terms of one micro-batch (``total`` is the weighted sum)."""
        cfg, sd = self.cfg, self.sd
        grid = batch["grid"].to(self.device)
        hint = batch["hint"].to(self.device)
        b = grid.shape[0]
        texts = list(batch["instruction"])
        if train and cfg.instruction_dropout > 0:
            drop = torch.rand(b, generator=gen) < cfg.instruction_dropout
            texts = ["" if d else t for d, t in zip(drop.tolist(), texts)]
        vae_dtype = next(sd.vae.parameters()).dtype
        f = self.vae_factor
        tmask = to_latent_mask(batch["target_mask"].to(self.device), f)
        with torch.no_grad():
            post = sd.vae.encode((grid * 2 - 1).to(vae_dtype)).latent_dist
            eps = torch.randn(post.mean.shape, generator=gen).to(self.device, post.mean.dtype)
            latents = (post.mean + post.std * eps).float() * sd.vae.config.scaling_factor
            # The known cells as the pipeline gives them: encoded from the grid with the target blanked
            # (the hint). Encoded from the full grid, their latents near the target would carry some
            # of the answer (the encoder sees across cell borders), which the model learns to read
            # during training and never finds at inference.
            known = sd.vae.encode((hint[:, :3] * 2 - 1).to(vae_dtype)).latent_dist.mode().float()
            latents = tmask * latents + (1 - tmask) * known * sd.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=gen).to(self.device)
        n_t = sd.noise_scheduler.config.num_train_timesteps
        t = torch.randint(0, n_t, (b,), generator=gen) if timesteps is None else timesteps.cpu()
        t = t.to(self.device)
        noisy = sd.noise_scheduler.add_noise(latents, noise, t)
        ctx_emb = self.encode_text(texts)
        cond = hint
        if cfg.target_channel:
            cond = torch.cat([hint, batch["target_mask"].to(self.device)[:, None]], 1)
        cn = self.wrapped["controlnet"]
        cond = fill_target_with_query(cond, self.hint_fill)
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
            out["sam"] = sam_loss(pred, target, rmask)
            total = total + cfg.lambda_sam * out["sam"]
        if self.clip is not None:
            out["esm"] = self._esm(grid, latents, noisy, pred, t)
            total = total + cfg.lambda_esm * out["esm"]
        out["total"] = total
        return out

    def _cells(self):
        from gie_core.visual_prompt import GridLayout

        return GridLayout(tile=self.cfg.tile, num_examples=self.cfg.k_examples, resize=self.cfg.resize,
                          placements=[]).cells

    def _esm(self, grid, latents, noisy, pred, t) -> torch.Tensor:
        cfg, sd, f = self.cfg, self.sd, self.vae_factor
        sel = (t < cfg.esm_max_timestep).nonzero().flatten()
        if sel.numel() == 0:
            return pred.sum() * 0.0  # stays in the graph, so every process runs the same backward
        cells = self._cells()
        top, left, h, w = cells["target"]
        x0 = predicted_x0(noisy[sel], pred[sel], t[sel], sd.noise_scheduler)
        x0_t = x0[..., top // f:(top + h) // f, left // f:(left + w) // f]
        if cfg.esm_decode == "vae":
            vae_dtype = next(sd.vae.parameters()).dtype
            img = sd.vae.decode((x0_t / sd.vae.config.scaling_factor).to(vae_dtype)).sample.float()
            img = ((img + 1) / 2).clamp(0, 1)
        else:
            W, bias = fit_latent_to_rgb(latents, grid)
            img = latent_to_rgb(x0_t, W, bias)

        def cell(name):
            tp, lf, hh, ww = cells[name]
            return grid[sel, :, tp:tp + hh, lf:lf + ww]

        e_pred = self.clip(img)
        with torch.no_grad():
            k = cfg.k_examples
            e_q = self.clip(cell("query"))
            e_a = torch.stack([self.clip(cell(f"example{i}_after")) for i in range(k)], 1)
            e_b = torch.stack([self.clip(cell(f"example{i}_before")) for i in range(k)], 1)
        # Mean over the selected samples, scaled by their share so the term's expected size does not
        # jump with how many samples of a batch fall under the threshold.
        return esm_loss(e_pred, e_q, e_a, e_b) * (sel.numel() / t.numel())

    # ---- loop
    def train(self) -> dict:
        """Runs from the start (or resumed) step to ``max_steps``; exports and returns a summary."""
        from tqdm.auto import tqdm

        cfg, acc = self.cfg, self.acc
        if acc.is_main_process:
            acc.init_trackers("instructgie", config={k: v for k, v in cfg.to_dict().items()
                                                     if isinstance(v, (int, float, str, bool))})
        sampler = StepSampler(self.start_step, cfg.max_steps, cfg.batch_size, cfg.gradient_accumulation_steps,
                              acc.num_processes, acc.process_index)
        loader = torch.utils.data.DataLoader(self.train_set, batch_size=cfg.batch_size, sampler=sampler,
                                             collate_fn=self.collate, num_workers=cfg.num_workers)
        it = iter(loader)
        bar = tqdm(total=cfg.max_steps, initial=self.start_step, desc="training",
                   disable=not (cfg.progress and acc.is_main_process))
        t0 = time.monotonic()
        losses_file = self.out / "losses.jsonl"
        step = self.start_step
        params = [p for m in self.wrapped.values() for p in m.parameters() if p.requires_grad]
        stopped_early = False
        while step < cfg.max_steps:
            accum: dict[str, float] = {}
            for micro in range(cfg.gradient_accumulation_steps):
                batch = next(it)
                gen = step_generator(cfg.seed, step, micro, acc.process_index)
                sync = micro == cfg.gradient_accumulation_steps - 1
                ctx = nullcontext() if sync else acc.no_sync(self.wrapped["controlnet"])
                with ctx:
                    losses = self.compute_losses(batch, gen)
                    if not torch.isfinite(losses["total"]):
                        raise FloatingPointError(f"step {step}: loss is {losses['total'].item()} "
                                                 f"(terms: { {k: v.item() for k, v in losses.items()} }); "
                                                 "lower the learning rate or use bf16 instead of fp16")
                    acc.backward(losses["total"] / cfg.gradient_accumulation_steps)
                for k, v in losses.items():
                    accum[k] = accum.get(k, 0.0) + v.item() / cfg.gradient_accumulation_steps
            if cfg.max_grad_norm > 0:
                acc.clip_grad_norm_(params, cfg.max_grad_norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.step(params)
            step += 1
            rec = {"step": step, **{k: round(v, 8) for k, v in accum.items()}, "lr": self.lr_scheduler.get_last_lr()[0]}
            self.history.append(rec)
            if acc.is_main_process:
                with losses_file.open("a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                if step % cfg.log_every == 0 or step == cfg.max_steps:
                    acc.log({f"train/{k}": v for k, v in rec.items() if k != "step"}, step=step)
            bar.update(1)
            bar.set_postfix(loss=f"{accum['total']:.4f}")
            if cfg.validate_every and step % cfg.validate_every == 0:
                self.validate(step)
            out_of_time = cfg.time_limit_minutes > 0 and time.monotonic() - t0 > cfg.time_limit_minutes * 60
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.max_steps or out_of_time:
                self.save_checkpoint(step, accum["total"])
            if self.on_step is not None:
                self.on_step(step, rec)
            if out_of_time:
                log.info("time limit of %.1f minutes reached at step %d", cfg.time_limit_minutes, step)
                stopped_early = True
                break
        bar.close()
        export = self.export() if acc.is_main_process else None
        acc.end_training()
        return {"steps": step, "stopped_early": stopped_early, "history": self.history, "export": export,
                "data": self.report.to_dict(), "bad_images_during_training": sorted(self.train_set.bad)}

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
            bank = [g.instruction for g in self.train_groups + self.val_groups] if self.cfg.liu else None
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


def train(cfg: TrainConfig, on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Builds a :class:`Trainer` for ``cfg`` and runs it; returns the summary dict."""
    return Trainer(cfg, on_step=on_step).setup().train()

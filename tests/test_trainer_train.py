"""The training loop on a tiny configuration: all three losses, learning, exact resume, bad data,
export, CLI."""
import json
from pathlib import Path

import pytest
import torch

from trainer import checkpoint as ckpt
from trainer.cli import main as cli_main
from trainer.config import make_config
from trainer.train import Trainer, step_generator, train

TINY = dict(data="synthetic:pairs=3,size=64,families=flip+invert+face+recolour", tile=64, base_model="tiny",
            hint_encoder_config='{"dims": [16, 32], "depths": [0, 1]}', esm_embedder="colour", esm_max_timestep=1000,
            batch_size=2, learning_rate=1e-4, validate_every=0, validation_inference_steps=0, checkpoint_every=0,
            progress=False, liu=False, verify="header", val_fraction=0.0)


def _cfg(tmp_path, **kw):
    return make_config(**{**TINY, "output_dir": str(tmp_path / "run"), **kw})


def test_few_steps_with_all_three_losses_and_export(tmp_path):
    r = train(_cfg(tmp_path, max_steps=3, validate_every=3, validation_inference_steps=2))
    hist = r["history"]
    assert [h["step"] for h in hist] == [1, 2, 3]
    for h in hist:
        assert {"ldm", "esm", "sam", "total"} <= set(h)
        assert h["esm"] > 0  # esm_max_timestep=1000: every sample counts
        assert h["total"] == pytest.approx(h["ldm"] + 0.1 * h["esm"] + 0.5 * h["sam"], rel=1e-4)
    assert any(h["sam"] > 0 for h in hist)  # face pairs carry masks
    from trainer.export import load_controlnet

    model = load_controlnet(r["export"])
    assert type(model).__name__ == "VMambaControlNetModel"
    assert (tmp_path / "run" / "logs").is_dir() and any((tmp_path / "run" / "logs").rglob("events.out.*"))
    assert len(ckpt.list_checkpoints(tmp_path / "run")) == 1  # the final one
    from PIL import Image

    sheet = Image.open(tmp_path / "run" / "validation" / "step-00000003.png")
    assert sheet.size == (5 * 64, 4 * 64)  # 4 samples: ex before | ex after | query | edit | truth


def test_loss_falls_on_a_fixed_batch(tmp_path):
    cfg = _cfg(tmp_path, learning_rate=2e-3, instruction_dropout=0.0)  # LDM + ESM + SAM
    tr = Trainer(cfg).setup()
    batch = tr.collate([tr.train_set[i] for i in range(2)])
    t = torch.tensor([300, 600])
    losses = []
    for _ in range(8):
        loss = tr.compute_losses(batch, step_generator(0, 0), timesteps=t)["total"]
        tr.optimizer.zero_grad()
        tr.acc.backward(loss)
        tr.optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_resume_after_a_kill_repeats_the_uninterrupted_losses(tmp_path):
    kw = dict(max_steps=4, checkpoint_every=2, ema=True, gradient_accumulation_steps=2, lr_scheduler="cosine",
              lr_warmup_steps=1, batch_size=1)
    straight = train(_cfg(tmp_path / "a", **kw))["history"]

    class Killed(Exception):
        pass

    def kill_at_3(step, rec):
        if step == 3:  # step 3 ran but was never checkpointed: lost, as in a real kill
            raise Killed

    with pytest.raises(Killed):
        train(_cfg(tmp_path / "b", **kw), on_step=kill_at_3)
    out = tmp_path / "b" / "run"
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["checkpoint-00000002"]
    (out / "checkpoint-00000004.tmp").mkdir()  # a half-written checkpoint from the crash is ignored
    resumed = train(_cfg(tmp_path / "b", resume="latest", **kw))["history"]
    assert [h["step"] for h in resumed] == [3, 4]
    for a, b in zip(straight[2:], resumed):
        for k in ("ldm", "esm", "sam", "total", "lr"):
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-7), (k, a, b)
    # The log holds every step once: step 3 of the killed run (after its last checkpoint) is gone.
    logged = [json.loads(x) for x in (out / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    assert logged[2]["total"] == pytest.approx(straight[2]["total"], rel=1e-4)


def test_dataset_with_broken_files_trains_and_reports_them(tmp_path):
    from trainer.data.synthetic import write_dataset

    root = write_dataset(tmp_path / "ds", 3, ["flip", "invert"], size=64, progress=False)
    rows = [json.loads(x) for x in (root / "metadata.jsonl").read_text().splitlines()]
    (root / rows[0]["before"]).write_bytes(b"\x89PNG garbage")
    (root / rows[1]["after"]).unlink()
    rows.append({"instruction": "flip it", "before": "images/nowhere.png", "after": rows[2]["after"]})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = train(_cfg(tmp_path, data=str(root), max_steps=2, verify="full"))
    assert len(r["history"]) == 2
    assert r["data"]["pairs_skipped"] == 3 and len(r["data"]["bad_files"]) == 3
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert sorted(report["bad_files"]) == sorted(r["data"]["bad_files"])


def test_conv_ablation_without_esm_sam_and_liu(tmp_path):
    r = train(_cfg(tmp_path, hint_encoder="conv", esm=False, sam=False, max_steps=2))
    assert set(r["history"][0]) >= {"ldm", "total"} and "esm" not in r["history"][0]
    from trainer.export import load_controlnet

    m = load_controlnet(r["export"])
    assert type(m).__name__ == "ControlNetModel"


def test_esm_latent_mode_and_threshold(tmp_path):
    tr = Trainer(_cfg(tmp_path, esm_decode="latent", esm_max_timestep=500)).setup()
    batch = tr.collate([tr.train_set[i] for i in range(2)])
    low = tr.compute_losses(batch, step_generator(0, 1), timesteps=torch.tensor([10, 20]))
    high = tr.compute_losses(batch, step_generator(0, 1), timesteps=torch.tensor([800, 900]))
    assert low["esm"].item() > 0 and low["esm"].requires_grad
    assert high["esm"].item() == 0.0  # no sample below the threshold


def test_vae_stage_sets_and_keeps_its_latent_scale(tmp_path):
    from diffusers import AutoencoderKL

    cfg = _cfg(tmp_path, vae_pretrain_steps=2, max_steps=1, esm=False, train_unet=True)
    train(cfg)
    saved = AutoencoderKL.from_pretrained(tmp_path / "run" / "vae_pretrained")
    base = AutoencoderKL.from_pretrained(tmp_path / "run" / "base" / "vae")
    # 1/std of the pretrained VAE's latents, not SD's 0.18215, and the exported base agrees.
    assert saved.config.scaling_factor != pytest.approx(0.18215)
    assert base.config.scaling_factor == pytest.approx(saved.config.scaling_factor)
    resumed = Trainer(_cfg(tmp_path, vae_pretrain_steps=2, max_steps=2, esm=False, train_unet=True,
                           resume="latest")).setup()  # reuses the pretrained VAE, scale included
    assert resumed.sd.vae.config.scaling_factor == pytest.approx(saved.config.scaling_factor)


@pytest.mark.parametrize("hint_encoder", ["vmamba", "conv"])
def test_factor_4_vae_v_prediction_stack_trains_and_exports(tmp_path, hint_encoder):
    # The from-scratch tiny stack of the demo preset: a factor-4 VAE (the UNet and both hint encoders
    # follow its factor) and a UNet predicting v, which the exported base's scheduler must say.
    from diffusers import DDIMScheduler

    vae = {"block_out_channels": [8, 16, 16], "down_block_types": ["DownEncoderBlock2D"] * 3,
           "up_block_types": ["UpDecoderBlock2D"] * 3, "latent_channels": 4}
    hint = '{"dims": [16, 32], "depths": [0, 1], "patch_size": 2}'
    r = train(_cfg(tmp_path, tiny_vae_config=json.dumps(vae), hint_encoder=hint_encoder, hint_encoder_config=hint,
                   prediction_type="v_prediction", vae_pretrain_steps=1, train_unet=True, max_steps=2))
    assert all(torch.isfinite(torch.tensor(h["total"])) for h in r["history"])
    sched = DDIMScheduler.from_pretrained(tmp_path / "run" / "base", subfolder="scheduler")
    assert sched.config.prediction_type == "v_prediction"
    from gie_core.loading import load_pipeline

    pipe = load_pipeline(tmp_path / "run" / "base", r["export"])
    assert pipe.vae_scale_factor == 4
    from PIL import Image

    img = Image.new("RGB", (64, 64), (200, 30, 30))
    out = pipe.edit([(img, img)], img, "flip it", tile=64, num_inference_steps=2, guidance_scale=1.0, seed=0)
    assert out.edits.shape == (1, 64, 64, 3) and torch.isfinite(out.edits).all()


@pytest.mark.parametrize("hint_encoder", ["vmamba", "conv"])
def test_zero_init_is_kept_by_default_and_dropped_on_request(tmp_path, hint_encoder):
    from trainer.train import build_controlnet, load_base

    def zero_convs(model):
        return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and not m.weight.any()]

    cfg = _cfg(tmp_path, hint_encoder=hint_encoder)
    unet = load_base(cfg).unet
    kept = zero_convs(build_controlnet(cfg, unet))
    assert "controlnet_cond_embedding.conv_out" in kept and "controlnet_mid_block" in kept
    fresh = build_controlnet(_cfg(tmp_path, hint_encoder=hint_encoder, controlnet_zero_init=False), unet)
    assert zero_convs(fresh) == []
    with torch.no_grad():  # so the hint reaches the output from the first step
        d, m = fresh(torch.randn(1, 4, 16, 16), torch.tensor([10]), encoder_hidden_states=torch.randn(1, 77, 32),
                     controlnet_cond=torch.rand(1, 3, 128, 128), return_dict=False)
    assert m.abs().sum() > 0


@pytest.mark.parametrize("hint_encoder", ["vmamba", "conv"])
def test_hint_target_fill_query_is_stored_with_the_controlnet_and_used_by_the_pipeline(tmp_path, hint_encoder):
    from gie_core.control_input import spec_for
    from gie_core.loading import load_controlnet

    r = train(_cfg(tmp_path, hint_encoder=hint_encoder, hint_target_fill="query", esm=False, max_steps=1))
    cn = load_controlnet(r["export"])
    if hint_encoder == "vmamba":  # the encoder fills the cell itself
        assert cn.controlnet_cond_embedding.config.target_fill == "query"
        assert spec_for(cn).fill == "blank"
    else:  # a plain ControlNet: config.json says so, the pipeline fills the hint for it
        assert spec_for(cn).fill == "query"
    with pytest.raises(ValueError, match="hint_target_fill='copy': expected blank or query"):
        _cfg(tmp_path, hint_target_fill="copy")


def test_prediction_type_option_is_checked(tmp_path):
    with pytest.raises(ValueError, match="prediction_type='x0'.*epsilon, v_prediction or sample"):
        _cfg(tmp_path, prediction_type="x0")


def test_8bit_adam_without_bitsandbytes_is_a_clear_error(tmp_path):
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed")
    tr = Trainer(_cfg(tmp_path, use_8bit_adam=True))
    with pytest.raises(ValueError, match="bitsandbytes"):
        tr._make_optimizer([torch.nn.Parameter(torch.zeros(2))])


def test_cli_help_presets_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--no-esm" in out and "--hint-encoder" in out and "tiny_debug" in out
    assert cli_main(["--preset", "tiny_debug", "--max-steps", "7", "--no-sam", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "max_steps: 7" in out and "sam: false" in out and "tile: 64" in out
    assert cli_main(["--hint-encoder", "transformer", "--print-config"]) == 2
    assert "hint_encoder" in capsys.readouterr().err
    assert cli_main(["--preset", "tiny_debug", "--base-model", str(tmp_path / "missing"),
                     "--output-dir", str(tmp_path / "o")]) == 2
    assert "base_model" in capsys.readouterr().err


@pytest.mark.parametrize("decode", ["vae", "latent"])
def test_esm_gradient_reaches_the_controlnet(tmp_path, decode):
    tr = Trainer(_cfg(tmp_path, esm_decode=decode, controlnet_zero_init=False)).setup()
    batch = tr.collate([tr.train_set[i] for i in range(2)])
    esm = tr.compute_losses(batch, step_generator(0, 1), timesteps=torch.tensor([50, 200]))["esm"]
    assert esm.item() > 0
    tr.optimizer.zero_grad()
    esm.backward()  # ESM alone
    cn = tr.acc.unwrap_model(tr.wrapped["controlnet"])
    grads = {n: p.grad.norm().item() for n, p in cn.named_parameters() if p.grad is not None}
    assert sum(grads.values()) > 0
    # ... down to the VMamba hint encoder, the part InstructGIE adds.
    assert sum(v for n, v in grads.items() if n.startswith("controlnet_cond_embedding.")) > 0


class _PoolAutoencoder(torch.nn.Module):
    """A linear autoencoder with no context across cell borders (8-px average pool, nearest
    upsample), in AutoencoderKL's calling shape: with it a perfect x̂0 decodes exactly like the
    example cells. A random tiny VAE cannot show that — its decoder hardly depends on its input."""

    def __init__(self):
        from types import SimpleNamespace

        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()), requires_grad=False)  # dtype/device probe
        self.config = SimpleNamespace(scaling_factor=1.0)

    def encode(self, x):
        from types import SimpleNamespace

        m = torch.nn.functional.avg_pool2d(x, 8)
        m = torch.cat([m, m.mean(1, keepdim=True)], 1)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=m, std=torch.zeros_like(m), mode=lambda: m))

    def decode(self, z):
        from types import SimpleNamespace

        return SimpleNamespace(sample=torch.nn.functional.interpolate(z[:, :3], scale_factor=8, mode="nearest"))


@pytest.mark.parametrize("decode", ["vae", "latent"])
def test_esm_compares_x0_and_the_known_cells_through_one_decoder(tmp_path, decode):
    # Example pair (A, A') and query A with target A': a prediction that is exactly the clean
    # latent makes the same shift as the example, so ESM is ~0 — but only if x̂0 and the example
    # cells reach pixels the same way. Decoded x̂0 against the sharp pixels (the old comparison)
    # adds the decoder's blur to the predicted shift.
    import numpy as np

    from gie_core.visual_prompt import build
    from trainer.data.synthetic import generate_pair
    from trainer.losses import esm_loss, to_latent_mask

    tr = Trainer(_cfg(tmp_path, esm_decode=decode, prediction_type="sample")).setup()
    tr.sd.vae = _PoolAutoencoder()
    p = generate_pair("invert", "colors", 0, 64)
    vp = build([(p.before, p.after)], p.before, tile=64, resize="crop", target=p.after)
    grid, hint = vp.grid.permute(0, 3, 1, 2), vp.hint.permute(0, 3, 1, 2)
    latents = tr.encode_grid(grid, hint, to_latent_mask(vp.target_mask, tr.vae_factor), None)
    x0 = latents.clone().requires_grad_()  # prediction_type 'sample': x̂0 is the prediction itself
    same_road = tr._esm(grid, latents, x0, x0, torch.tensor([10]))
    same_road.backward()
    assert same_road.item() < 1e-3 and x0.grad.abs().sum() > 0

    top, left, h, w = tr._cells()["target"]
    emb = tr.esm_embedder
    x0_img = tr.sd.vae.decode(latents[..., top // 8:(top + h) // 8, left // 8:(left + w) // 8]).sample
    sharp = [torch.from_numpy(np.asarray(im, np.float32) / 255).permute(2, 0, 1)[None] for im in (p.before, p.after)]
    mixed = esm_loss(emb(x0_img), emb(sharp[0]), emb(sharp[1]), emb(sharp[0])).item()
    assert mixed > 0.01, mixed


def test_sigterm_writes_a_checkpoint_and_the_cli_says_how_to_go_on(tmp_path):
    # A scheduler's plain `kill`: the run finishes its step, checkpoints it and exits 128+15.
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "trainer", "--preset", "tiny_debug", "--output-dir", str(out), "--max-steps", "1000",
           "--no-progress", "--checkpoint-every", "0", "--batch-size", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    log = out / "losses.jsonl"
    deadline = time.monotonic() + 300
    while not (log.is_file() and log.read_text().count("\n") >= 2) and proc.poll() is None:
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert "SIGTERM at step" in last and "--resume latest" in last and "Traceback" not in err
    steps = [json.loads(x)["step"] for x in log.read_text().splitlines()]
    assert [p.name for p in ckpt.list_checkpoints(out)] == [f"checkpoint-{steps[-1]:08d}"]
    assert not (out / "controlnet.safetensors").exists()  # no export from a killed run


def test_resume_options_and_a_used_output_folder(tmp_path, capsys):
    base = ["--preset", "tiny_debug", "--output-dir", str(tmp_path / "o"), "--no-progress", "--max-steps", "1"]
    assert cli_main([*base, "--resume", "latest"]) == 2  # nothing to resume: one line, no traceback
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resume='latest': no checkpoint" in err[0] and "--resume auto" in err[0]
    assert cli_main([*base, "--resume", "auto"]) == 0  # auto: from scratch when there is none
    assert cli_main(base) == 2  # a fresh run must not mix with the one already there
    assert "already holds checkpoint-00000001" in capsys.readouterr().err
    assert cli_main([*base, "--resume", str(tmp_path / "nowhere")]) == 2
    assert "expected 'latest', 'auto' or a checkpoint folder" in capsys.readouterr().err


def test_weights_and_checkpoints_follow_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        r = train(_cfg(tmp_path, max_steps=1, esm=False, train_unet=True))
        run = tmp_path / "run"
        files = [Path(r["export"])] + [p for d in (run / "checkpoint-00000001", run / "base") for p in d.rglob("*")
                                        if p.is_file()]
        assert any(f.suffix == ".safetensors" for f in files[1:])
        for f in files:
            assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
    finally:
        os.umask(old)


# ----------------------------------------------------------------------------- SAM that cannot vanish
@pytest.mark.parametrize("args,expected", [
    (["--sam-backend", "mask2former"], "needs model=<local folder>"),
    (["--sam-model", "/nowhere/m2f"], "sam_model='/nowhere/m2f': no such folder"),
    (["--sam-region", "hair"], "region 'hair' needs a model folder"),
    (["--sam-backend", "segformer3000"], "backend: expected one of"),
])
def test_sam_that_cannot_work_stops_the_run_at_start_up(tmp_path, capsys, args, expected):
    out = tmp_path / "o"
    rc = cli_main(["--preset", "tiny_debug", "--output-dir", str(out), "--no-progress", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and expected in err[0] and "--no-sam" in err[0], err
    assert not (out / "data_report.json").exists()  # before the data is read, let alone a step


def test_sam_with_a_broken_model_folder_is_one_line(tmp_path, capsys):
    bad = tmp_path / "m2f"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    rc = cli_main(["--preset", "tiny_debug", "--output-dir", str(tmp_path / "o"), "--no-progress",
                   "--sam-model", str(bad), "--sam-region", "person"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot be used" in err[0] and str(bad) in err[0], err


@pytest.mark.parametrize("kind", ["mask2former", "face_parsing"])
def test_sam_from_a_local_segmentation_model_folder(tmp_path, kind):
    # Tiny random models biased so that one label covers every pixel: the SAM mask is then the whole
    # target cell, so SAM equals the LDM term on it (the same MSE, the same weights).
    from gie_core.regions.tiny import save_tiny_face_parser, save_tiny_mask2former

    folder = tmp_path / kind
    if kind == "mask2former":
        save_tiny_mask2former(folder, favour="person")
        region = "person"
    else:
        save_tiny_face_parser(folder, favour="hair")
        region = "hair"
    tr = Trainer(_cfg(tmp_path, data="synthetic:pairs=4,size=64,families=flip+invert", sam_backend=kind,
                      sam_model=str(folder), sam_region=region, esm=False)).setup()
    batch = tr.collate([tr.train_set[i] for i in range(2)])
    assert torch.equal(batch["region_mask"], batch["target_mask"])
    losses = tr.compute_losses(batch, step_generator(0, 0), timesteps=torch.tensor([100, 500]))
    assert losses["sam"].item() == pytest.approx(losses["ldm"].item(), rel=1e-5)
    st = tr.region_masks.stats
    assert st["computed"] >= 1 and st["computed"] + st["memory"] + st["disk"] == 2 and st["with_region"] >= 1

"""Loaders: diffusers folders, single-file (LDM-layout) checkpoints, pickle opt-in, tokenizers, errors."""
import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from gie_core import loading, tiny
from gie_core.loading import ModelLoadError

# ---------------------------------------------------------------- an LDM-layout exporter (test only)
_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
           ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]


def _resnet(rest):
    for a, b in _RESNET:
        if rest.startswith(a + "."):
            return b + rest[len(a):]
    raise KeyError(rest)


def unet_to_ldm(unet):
    """diffusers UNet state dict -> original (CompVis) names, written from the LDM layout:
    input_blocks[0] = conv_in, then per level `lpb` (resnet[, attention]) blocks and a downsampler;
    middle_block = resnet, attention, resnet; output_blocks: `lpb+1` per level, upsampler last."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    lpb = unet.config.layers_per_block
    top = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]
    sd = unet.state_dict()
    up_has_attn = {int(k.split(".")[1]) for k in sd if k.startswith("up_blocks.") and ".attentions." in k}
    out = {}
    for k, v in sd.items():
        p = k.split(".")
        if k in top:
            new = top[k]
        elif p[0] == "down_blocks":
            i = int(p[1])
            if p[2] == "downsamplers":
                new = f"input_blocks.{(i + 1) * (lpb + 1)}.0.op.{p[-1]}"
            else:
                idx = 1 + i * (lpb + 1) + int(p[3])
                rest = ".".join(p[4:])
                new = f"input_blocks.{idx}.0.{_resnet(rest)}" if p[2] == "resnets" else f"input_blocks.{idx}.1.{rest}"
        elif p[0] == "mid_block":
            rest = ".".join(p[3:])
            new = f"middle_block.{2 * int(p[2])}.{_resnet(rest)}" if p[1] == "resnets" else f"middle_block.1.{rest}"
        elif p[0] == "up_blocks":
            i = int(p[1])
            if p[2] == "upsamplers":
                pos = 2 if i in up_has_attn else 1
                new = f"output_blocks.{i * (lpb + 1) + lpb}.{pos}.conv.{p[-1]}"
            else:
                idx = i * (lpb + 1) + int(p[3])
                rest = ".".join(p[4:])
                new = f"output_blocks.{idx}.0.{_resnet(rest)}" if p[2] == "resnets" else f"output_blocks.{idx}.1.{rest}"
        else:
            raise KeyError(k)
        out["model.diffusion_model." + new] = v
    return out


def vae_to_ldm(vae):
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top = DIFFUSERS_TO_LDM_MAPPING["vae"]
    n = len(vae.config.up_block_types)
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for k, v in vae.state_dict().items():
        p = k.split(".")
        if k in top:
            new = top[k]
        elif p[1] == "mid_block" and p[2] == "attentions":
            rest = ".".join(p[4:-1])
            new = f"{p[0]}.mid.attn_1.{attn[rest]}.{p[-1]}"
            if v.ndim == 2:
                v = v[:, :, None, None]  # LDM stores these as 1x1 convs
        elif p[1] == "mid_block":
            new = f"{p[0]}.mid.block_{int(p[3]) + 1}.{'.'.join(p[4:])}"
        elif p[1] == "down_blocks":
            i = int(p[2])
            new = (f"encoder.down.{i}.downsample.conv.{p[-1]}" if p[3] == "downsamplers"
                   else f"encoder.down.{i}.block.{p[4]}.{'.'.join(p[5:])}")
        elif p[1] == "up_blocks":
            i = n - 1 - int(p[2])
            new = (f"decoder.up.{i}.upsample.conv.{p[-1]}" if p[3] == "upsamplers"
                   else f"decoder.up.{i}.block.{p[4]}.{'.'.join(p[5:])}")
        else:
            raise KeyError(k)
        out["first_stage_model." + new.replace("conv_shortcut", "nin_shortcut")] = v
    return out


def text_to_ldm(text_encoder):
    out = {}
    for k, v in text_encoder.state_dict().items():
        k = k if k.startswith("text_model.") else "text_model." + k
        out["cond_stage_model.transformer." + k] = v
    return out


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("loading")
    folder = tiny.save_tiny_sd(root / "sd", seed=1)
    parts = tiny.make_tiny_sd_components(1)
    ldm = {**unet_to_ldm(parts["unet"]), **vae_to_ldm(parts["vae"]), **text_to_ldm(parts["text_encoder"])}
    ldm = {k: v.clone().contiguous() for k, v in ldm.items()}
    single = root / "tiny-sd.safetensors"
    save_file(ldm, str(single))
    return dict(root=root, folder=folder, single=single, parts=parts, ldm=ldm)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ---------------------------------------------------------------- base models
def test_folder_loads_every_part(tiny_models):
    base = loading.load_base(tiny_models["folder"])
    for name in ("unet", "vae", "text_encoder"):
        _same_weights(base[name], tiny_models["parts"][name])
    assert base["tokenizer"]("make it winter").input_ids[0] == 998


def test_single_file_round_trips_to_the_same_weights(tiny_models):
    base = loading.load_base(tiny_models["single"], config_dir=tiny_models["folder"])
    for name in ("unet", "vae", "text_encoder"):
        _same_weights(base[name], tiny_models["parts"][name])
    assert type(base["scheduler"]).__name__ == "PNDMScheduler"
    assert base["tokenizer"]("make it winter").input_ids == tiny_models["parts"]["tokenizer"]("make it winter").input_ids


def test_pickle_checkpoints_need_opt_in_and_load_weights_only(tiny_models, tmp_path):
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": tiny_models["ldm"]}, ckpt)
    with pytest.raises(ModelLoadError, match="allow_pickle"):
        loading.load_base(ckpt, config_dir=tiny_models["folder"])
    base = loading.load_base(ckpt, config_dir=tiny_models["folder"], allow_pickle=True)
    _same_weights(base["unet"], tiny_models["parts"]["unet"])

    class Evil:  # would run code on unpickling without weights_only
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.ckpt"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    with pytest.raises(ModelLoadError, match="weights_only"):
        loading.load_checkpoint_state_dict(evil, allow_pickle=True)


def test_base_errors(tiny_models, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        loading.load_base(tmp_path / "nope.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="model_index.json"):
        loading.load_base(tmp_path / "empty")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ModelLoadError, match="not a readable .safetensors"):
        loading.load_base(junk)
    odd = tmp_path / "model.onnx"
    odd.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="unknown format"):
        loading.load_base(odd)
    other = tmp_path / "other.safetensors"
    save_file({"foo.weight": torch.zeros(2)}, str(other))
    with pytest.raises(ModelLoadError, match="not a Stable Diffusion checkpoint"):
        loading.load_base(other)
    # an SD2-like checkpoint: other cross-attention width than the config
    ldm = dict(tiny_models["ldm"])
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    ldm[key] = torch.zeros(ldm[key].shape[0], 48)
    sd2 = tmp_path / "sd2ish.safetensors"
    save_file(ldm, str(sd2))
    with pytest.raises(ModelLoadError, match="cross-attention width 48"):
        loading.load_base(sd2, config_dir=tiny_models["folder"])
    no_text = {k: v for k, v in tiny_models["ldm"].items() if not k.startswith("cond_stage_model")}
    nt = tmp_path / "notext.safetensors"
    save_file(no_text, str(nt))
    with pytest.raises(ModelLoadError, match="text encoder"):
        loading.load_base(nt, config_dir=tiny_models["folder"])


# ---------------------------------------------------------------- tokenizer and shipped configs
def test_clip_tokenizer_from_the_openai_clip_package():
    tok = loading.load_tokenizer()
    # CLIP's published ids: <|startoftext|> a photo of a cat <|endoftext|>
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tok) == 49408 and tok.model_max_length == 77


def test_tokenizer_sources_and_errors(tiny_models, tmp_path, monkeypatch):
    tok = loading.load_tokenizer(tiny_models["folder"])  # a diffusers folder -> its tokenizer/
    assert tok("winter").input_ids[0] == 998
    monkeypatch.setenv(loading.TOKENIZER_ENV, str(tiny_models["folder"] / "tokenizer"))
    assert loading.load_tokenizer()("winter").input_ids[0] == 998
    monkeypatch.delenv(loading.TOKENIZER_ENV)
    (tmp_path / "bare").mkdir()
    with pytest.raises(ModelLoadError, match="vocab.json"):
        loading.load_tokenizer(tmp_path / "bare")
    monkeypatch.setattr(loading, "_clip_bpe_from_package", lambda: None)
    with pytest.raises(ModelLoadError, match="--tokenizer"):
        loading.load_tokenizer()


def test_shipped_sd15_configs_have_sd15_sizes():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    d = loading.CONFIG_DIR / "sd15"
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(json.loads((d / "unet" / "config.json").read_text()))
        vae = AutoencoderKL.from_config(json.loads((d / "vae" / "config.json").read_text()))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(str(d / "text_encoder")))
    # published parameter counts of SD1.5's UNet, VAE and CLIP ViT-L/14 text model
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    assert sum(p.numel() for p in text.parameters()) == 123_060_480


# ---------------------------------------------------------------- ControlNet and the whole pipeline
def test_controlnet_loading_and_mismatch(tiny_models, tmp_path):
    from gie_core.models import VMambaControlNetModel, save_vmamba_controlnet

    parts = tiny_models["parts"]
    hint = dict(dims=(8, 16), depths=(0, 1))
    good = save_vmamba_controlnet(VMambaControlNetModel.from_unet(parts["unet"], hint_encoder_config=hint),
                                  tmp_path / "good.safetensors")
    cn = loading.load_controlnet(good, unet=parts["unet"])
    assert isinstance(cn, VMambaControlNetModel)
    wide = tiny.make_tiny_unet(0, cross_attention_dim=64)
    bad = save_vmamba_controlnet(VMambaControlNetModel.from_unet(wide, hint_encoder_config=hint),
                                 tmp_path / "wide.safetensors")
    with pytest.raises(ModelLoadError, match="cross_attention_dim|cross-attention"):
        loading.load_controlnet(bad, unet=parts["unet"])
    with pytest.raises(ModelLoadError, match="pickle"):
        (tmp_path / "cn.ckpt").write_bytes(b"x")
        loading.load_controlnet(tmp_path / "cn.ckpt")
    with pytest.raises(ModelLoadError, match="does not exist"):
        loading.load_controlnet(tmp_path / "missing.safetensors")
    # a plain diffusers ControlNet folder also loads (used for comparisons)
    from diffusers import ControlNetModel

    plain = ControlNetModel.from_unet(parts["unet"], conditioning_embedding_out_channels=(8, 8, 8, 8))
    plain.save_pretrained(str(tmp_path / "plain"))
    assert type(loading.load_controlnet(tmp_path / "plain", unet=parts["unet"])) is ControlNetModel
    with pytest.raises(ModelLoadError, match="ControlNet"):
        loading.load_base(tmp_path / "plain")
    with pytest.raises(ModelLoadError, match="does not fit|cross"):
        loading.check_compatible(parts["unet"], ControlNetModel.from_unet(
            wide, conditioning_embedding_out_channels=(8, 8, 8, 8)))


def test_load_pipeline_options(tiny_models, tmp_path):
    from gie_core.models import VMambaControlNetModel, save_vmamba_controlnet

    cn = save_vmamba_controlnet(VMambaControlNetModel.from_unet(
        tiny_models["parts"]["unet"], hint_encoder_config=dict(dims=(8, 16), depths=(0, 1))), tmp_path / "cn.safetensors")
    pipe = loading.load_pipeline(tiny_models["single"], cn, config_dir=tiny_models["folder"], scheduler="euler_a")
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert pipe.unet.dtype == torch.float32 and pipe.device.type == "cpu"
    with pytest.raises(ValueError, match="fp16"):
        loading.load_pipeline(tiny_models["folder"], cn, dtype="fp16")
    with pytest.raises(ModelLoadError, match="cpu_offload"):
        loading.load_pipeline(tiny_models["folder"], cn, cpu_offload=True)
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA"):
            loading.load_pipeline(tiny_models["folder"], cn, device="cuda")
    with pytest.raises(ModelLoadError, match="device"):
        loading.load_pipeline(tiny_models["folder"], cn, device="quantum")
    with pytest.raises(ValueError, match="dtype"):
        loading.resolve_dtype("int8")

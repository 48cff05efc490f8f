"""One-file save/load of the VMamba ControlNet: bit-exact round trip, splitting for loaders,
and the error cases (corrupt, truncated, foreign, other base, missing/unexpected keys)."""
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gie_core.models import (
    SDXL_UNET_CONFIG,
    CorruptFileError,
    IncompatibleBaseError,
    NotVMambaControlNetError,
    StateDictMismatchError,
    VMambaControlNetModel,
    VMambaHintEncoder,
    load_vmamba_controlnet,
    read_vmamba_config,
    save_vmamba_controlnet,
    split_vmamba_state_dict,
)
from gie_core.tiny import make_tiny_unet

HINT = dict(dims=(16, 32), depths=(1, 1), mlp_ratio=2.0, scan_backend="reference", use_target_channel=True)


@pytest.fixture(scope="module")
def unet():
    return make_tiny_unet(seed=0)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, unet):
    torch.manual_seed(0)
    cn = VMambaControlNetModel.from_unet(unet, hint_encoder_config=HINT)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero everywhere, so a dropped or misplaced tensor would show in the outputs
        for p in cn.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    path = save_vmamba_controlnet(cn, tmp_path_factory.mktemp("cn") / "vmamba_cn.safetensors")
    return cn.eval(), path


def run(cn, seed=0):
    g = torch.Generator().manual_seed(seed)
    sample, ehs = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, 32, generator=g)
    hint = torch.rand(2, 4, 64, 64, generator=g)
    with torch.no_grad():
        out = cn(sample, 10, ehs, hint)
    return [*out.down_block_res_samples, out.mid_block_res_sample]


def test_round_trip_is_bit_exact(saved):
    cn, path = saved
    loaded = load_vmamba_controlnet(path)
    assert type(loaded) is VMambaControlNetModel
    def public(config):
        return json.loads(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}))

    assert public(loaded.config) == public(cn.config)
    for a, b in zip(run(cn), run(loaded)):
        assert torch.equal(a, b)
    half = load_vmamba_controlnet(path, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())


def test_file_layout_keys_and_metadata(saved):
    cn, path = saved
    with safe_open(str(path), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert keys == set(cn.state_dict())
    assert "controlnet_down_blocks.0.weight" in keys and "mid_block.resnets.0.conv1.weight" in keys
    assert any(k.startswith("controlnet_cond_embedding.stages.") for k in keys)
    assert meta["format"] == "instructgie-vmamba-controlnet" and meta["format_version"] == "1"
    config = read_vmamba_config(path)
    assert config == json.loads(meta["config"])
    assert config["hint_encoder_config"]["use_target_channel"] is True and config["conditioning_channels"] == 4


def test_split_state_dict_for_loaders(saved):
    from diffusers import ControlNetModel

    cn, path = saved
    config, standard, hint = split_vmamba_state_dict(path)
    assert not any(k.startswith("controlnet_cond_embedding.") for k in standard)
    enc = VMambaHintEncoder(config["hint_encoder_config"])
    enc.load_state_dict(hint, strict=True)
    for k, v in cn.hint_encoder.state_dict().items():
        assert torch.equal(enc.state_dict()[k], v)
    # with a placeholder conv hint block, the standard part is a complete diffusers ControlNet
    _, standard, _ = split_vmamba_state_dict(path, placeholder_cond_embedding=True)
    assert "controlnet_cond_embedding.conv_in.weight" in standard
    plain_config = {k: v for k, v in config.items() if k != "hint_encoder_config"}
    plain_config["conditioning_channels"] = 3
    plain = ControlNetModel.from_config(plain_config)
    plain.load_state_dict(standard, strict=True)
    assert torch.equal(plain.controlnet_mid_block.weight, cn.controlnet_mid_block.weight)


def test_truncated_and_corrupt_files(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="truncated.safetensors.*truncated or corrupt"):
        load_vmamba_controlnet(truncated)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 7)
    with pytest.raises(CorruptFileError):
        read_vmamba_config(junk)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_vmamba_controlnet(tmp_path / "nowhere.safetensors")
    # NaN weights (damaged data that still parses)
    with safe_open(str(path), "pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    state["controlnet_mid_block.weight"][0, 0] = float("nan")
    nan_file = tmp_path / "nan.safetensors"
    save_file(state, str(nan_file), metadata=meta)
    with pytest.raises(CorruptFileError, match="controlnet_mid_block.weight.*NaN"):
        load_vmamba_controlnet(nan_file)


def test_foreign_safetensors_is_not_a_vmamba_controlnet(tmp_path, unet):
    from diffusers import ControlNetModel

    plain = ControlNetModel.from_unet(unet)
    path = tmp_path / "plain_controlnet.safetensors"
    save_file(plain.state_dict(), str(path))
    with pytest.raises(NotVMambaControlNetError, match="not an InstructGIE VMamba ControlNet"):
        load_vmamba_controlnet(path)
    save_file({"x": torch.zeros(1)}, str(path), metadata={"format": "pt"})
    with pytest.raises(NotVMambaControlNetError, match="format='pt'"):
        split_vmamba_state_dict(path)


def test_other_base_is_rejected(saved, unet):
    _, path = saved
    with pytest.raises(IncompatibleBaseError, match="cross_attention_dim: file 32 vs base 2048"):
        load_vmamba_controlnet(path, base_config=SDXL_UNET_CONFIG)
    with pytest.raises(IncompatibleBaseError, match="block_out_channels"):
        load_vmamba_controlnet(path, base_config={**dict(unet.config), "block_out_channels": [64, 128]})
    assert load_vmamba_controlnet(path, base_config=unet) is not None  # the right base passes


def test_missing_and_unexpected_keys_are_named(saved, tmp_path):
    _, path = saved
    with safe_open(str(path), "pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    missing = dict(state)
    del missing["controlnet_cond_embedding.conv_out.weight"]
    p = tmp_path / "missing.safetensors"
    save_file(missing, str(p), metadata=meta)
    with pytest.raises(StateDictMismatchError, match="missing 1 key.*controlnet_cond_embedding.conv_out.weight"):
        load_vmamba_controlnet(p)
    extra = {**state, "controlnet_cond_embedding.extra.weight": torch.zeros(2)}
    save_file(extra, str(p), metadata=meta)
    with pytest.raises(StateDictMismatchError, match="unexpected 1 key.*extra.weight"):
        load_vmamba_controlnet(p)
    # weights of another hint-encoder config under this file's config: shapes named
    reshaped = dict(state)
    reshaped["controlnet_cond_embedding.conv_out.weight"] = torch.zeros(32, 16, 3, 3)
    save_file(reshaped, str(p), metadata=meta)
    with pytest.raises(StateDictMismatchError, match="conv_out.weight: file"):
        load_vmamba_controlnet(p)


def test_save_rejects_other_models(tmp_path, unet):
    with pytest.raises(ValueError, match="VMambaControlNetModel"):
        save_vmamba_controlnet(unet, tmp_path / "x.safetensors")

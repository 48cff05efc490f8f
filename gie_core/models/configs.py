"""Reference UNet configs (diffusers ``UNet2DConditionModel`` keyword arguments), written inline so
nothing is fetched: used to build full-size random models in tests and to recognise a file's base."""
from __future__ import annotations

#: Stable Diffusion 1.x UNet (runwayml/stable-diffusion-v1-5 ``unet/config.json``).
SD15_UNET_CONFIG = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=768,
    attention_head_dim=8,
)

#: Stable Diffusion XL base UNet: other widths, 2048-d cross-attention, text-time embedding.
SDXL_UNET_CONFIG = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    cross_attention_dim=2048,
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)

#: Keys that must agree between a ControlNet and the UNet it conditions (they fix the residual shapes
#: and the text/time embeddings the copied encoder expects).
BASE_KEYS = ("in_channels", "block_out_channels", "down_block_types", "layers_per_block", "cross_attention_dim",
             "transformer_layers_per_block", "addition_embed_type", "encoder_hid_dim")


def base_family(config) -> str:
    """A short name for the base model a UNet/ControlNet config belongs to: ``"sd1"``, ``"sd2"``,
    ``"sdxl"`` or ``"unknown"`` (judged from cross-attention width, block widths and embeddings)."""
    get = config.get if hasattr(config, "get") else (lambda k, d=None: getattr(config, k, d))
    cross = get("cross_attention_dim")
    widths = tuple(get("block_out_channels") or ())
    if get("addition_embed_type") == "text_time" and cross == 2048:
        return "sdxl"
    if widths == (320, 640, 1280, 1280):
        if cross == 768:
            return "sd1"
        if cross == 1024:
            return "sd2"
    return "unknown"

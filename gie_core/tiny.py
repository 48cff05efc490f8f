"""Tiny random Stable-Diffusion-shaped components built from configs, offline.

Used by the tests, the benchmarks and the trainer's tiny presets. Every factory takes a seed so
the same call builds the same weights. The shapes follow SD1.5 (4 latent channels, VAE factor 8,
cross-attention on a CLIP text encoder) at a fraction of the width, so code written against them
runs unchanged on the real SD1.5.
"""
from __future__ import annotations

import torch


def tiny_unet_config(cross_attention_dim: int = 32) -> dict:
    return dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def tiny_vae_config() -> dict:
    # Four blocks give the real SD downscale factor of 8.
    return dict(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
    )


def tiny_text_encoder_config(vocab_size: int = 1000) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=32,
        # The tiny tokenizer puts its special tokens last, as CLIP's does.
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def make_tiny_unet(seed: int = 0, **overrides):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**{**tiny_unet_config(), **overrides})


def make_tiny_vae(seed: int = 0, **overrides):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**{**tiny_vae_config(), **overrides})


def make_tiny_text_encoder(seed: int = 0, **overrides):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(**{**tiny_text_encoder_config(), **overrides}))

"""``VMambaControlNetModel``: diffusers' ControlNet with the VMamba hint encoder.

Only the conditioning embedding differs from diffusers' :class:`~diffusers.ControlNetModel`, so
diffusers' ControlNet pipelines (text-to-image, img2img, inpaint), schedulers, ``from_unet``
initialisation, ``save_pretrained``/``from_pretrained`` and gradient checkpointing work unchanged.
The hint-encoder config is one more entry of the diffusers config (``hint_encoder_config``), so
``save_config``/``from_config`` round-trip it.
"""
from __future__ import annotations

import inspect

from diffusers import ControlNetModel
from diffusers.configuration_utils import register_to_config

from .vmamba import HintEncoderConfig, VMambaHintEncoder


def _check_hint_config(hint: HintEncoderConfig, block_out_channels, conditioning_channels: int) -> None:
    if hint.out_channels != block_out_channels[0]:
        raise ValueError(f"VMambaControlNetModel: hint_encoder_config.out_channels={hint.out_channels} must equal "
                         f"the ControlNet's first block width block_out_channels[0]={block_out_channels[0]}")
    if hint.total_in_channels != conditioning_channels:
        raise ValueError(f"VMambaControlNetModel: the hint encoder takes {hint.total_in_channels} channels but "
                         f"conditioning_channels={conditioning_channels}; they must agree")


class VMambaControlNetModel(ControlNetModel):
    """A diffusers ControlNet whose ``controlnet_cond_embedding`` is a :class:`VMambaHintEncoder`.

    Takes every :class:`~diffusers.ControlNetModel` argument plus ``hint_encoder_config`` (a
    :class:`HintEncoderConfig` or its dict; ``None`` gives the default encoder with
    ``out_channels = block_out_channels[0]`` and a target channel iff ``conditioning_channels == 4``).
    ``conditioning_embedding_out_channels`` is unused (it sizes the conv tower this class replaces).

    Inference calls (``torch.no_grad``) reuse the hint features across steps and CFG halves; see
    :attr:`hint_caching` and :meth:`clear_hint_cache`.
    """

    def __init__(self, *args, hint_encoder_config: dict | HintEncoderConfig | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        block_out = self.config.block_out_channels
        cond_channels = self.config.conditioning_channels
        if hint_encoder_config is None:
            hint = HintEncoderConfig(out_channels=block_out[0], use_target_channel=cond_channels == 4)
        else:
            hint = HintEncoderConfig.coerce(hint_encoder_config)
        _check_hint_config(hint, block_out, cond_channels)
        if self.config.controlnet_conditioning_channel_order != "rgb" and hint.use_target_channel:
            raise ValueError("VMambaControlNetModel: controlnet_conditioning_channel_order='bgr' would flip the "
                             "target-cell channel into the image; use 'rgb' with use_target_channel")
        self.controlnet_cond_embedding = VMambaHintEncoder(hint)
        # Store the resolved, JSON-ready config so save_config/from_config reproduce this exact encoder.
        self.register_to_config(hint_encoder_config=hint.to_dict())

    @property
    def hint_encoder(self) -> VMambaHintEncoder:
        """The VMamba hint encoder (the module at ``controlnet_cond_embedding``)."""
        return self.controlnet_cond_embedding

    @property
    def hint_encoder_config(self) -> HintEncoderConfig:
        return HintEncoderConfig.from_dict(dict(self.config.hint_encoder_config))

    @property
    def hint_caching(self) -> bool:
        """Whether hint features are cached under no-grad; set False to recompute at every call."""
        return self.controlnet_cond_embedding.caching

    @hint_caching.setter
    def hint_caching(self, value: bool) -> None:
        self.controlnet_cond_embedding.caching = value

    def clear_hint_cache(self) -> None:
        """Drop cached hint features (e.g. at the end of a sampling run, to free memory)."""
        self.controlnet_cond_embedding.clear_hint_cache()

    @classmethod
    def from_unet(cls, unet, hint_encoder_config: dict | HintEncoderConfig | None = None,
                  load_weights_from_unet: bool = True, controlnet_conditioning_channel_order: str = "rgb",
                  **kwargs) -> VMambaControlNetModel:
        """Copy ``unet``'s encoder as diffusers' ``ControlNetModel.from_unet`` does, with a VMamba hint encoder.

        Args:
            unet: a diffusers ``UNet2DConditionModel``.
            hint_encoder_config: the hint encoder's config (dict or :class:`HintEncoderConfig`); ``None``
                is the default one. Its ``out_channels`` must be ``unet``'s first block width (a
                ``None`` config or one without ``out_channels`` gets it filled in).
            load_weights_from_unet: copy the encoder weights (True) or keep a random init.
        """
        if "conditioning_embedding_out_channels" in kwargs or "conditioning_channels" in kwargs:
            raise ValueError("VMambaControlNetModel.from_unet: the conditioning embedding is set by "
                             "hint_encoder_config, not conditioning_embedding_out_channels/conditioning_channels")
        if kwargs:
            raise TypeError(f"VMambaControlNetModel.from_unet: unexpected argument(s) {sorted(kwargs)}")
        width = unet.config.block_out_channels[0]
        if hint_encoder_config is None:
            hint = HintEncoderConfig(out_channels=width)
        elif isinstance(hint_encoder_config, HintEncoderConfig):
            hint = hint_encoder_config
        else:
            hint = HintEncoderConfig.from_dict({"out_channels": width, **dict(hint_encoder_config)})
        # diffusers' from_unet builds cls(...) with the default encoder; swap in the configured one after.
        model = super().from_unet(
            unet,
            controlnet_conditioning_channel_order=controlnet_conditioning_channel_order,
            load_weights_from_unet=load_weights_from_unet,
            conditioning_channels=hint.total_in_channels,
        )
        _check_hint_config(hint, model.config.block_out_channels, model.config.conditioning_channels)
        model.controlnet_cond_embedding = VMambaHintEncoder(hint).to(model.conv_in.weight.device)
        model.register_to_config(hint_encoder_config=hint.to_dict())
        return model


# ConfigMixin reads the accepted config keys from the __init__ signature: expose ControlNetModel's
# parameters plus hint_encoder_config, then register them all (diffusers' @register_to_config).
# (Setting a function's signature and replacing a method are what this needs; mypy flags both.)
_base_params = list(inspect.signature(ControlNetModel.__init__).parameters.values())
VMambaControlNetModel.__init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    _base_params + [inspect.Parameter("hint_encoder_config", inspect.Parameter.KEYWORD_ONLY, default=None)]
)
VMambaControlNetModel.__init__ = register_to_config(VMambaControlNetModel.__init__)  # type: ignore[method-assign]

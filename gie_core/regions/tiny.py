"""Tiny random Mask2Former and face-parsing SegFormer folders for offline tests and benchmarks.

``favour`` biases the classifier so that one label wins every pixel: the right answer is then known
without trained weights."""
from __future__ import annotations

from pathlib import Path

COCO_LIKE_LABELS = {0: "person", 1: "car", 2: "sky", 3: "dog"}
FACE_PARSING_LABELS = {0: "background", 1: "skin", 2: "nose", 3: "l_eye", 4: "r_eye", 5: "u_lip", 6: "hair",
                       7: "neck"}


def _processor_cls(name: str):
    import transformers

    return getattr(transformers, name + "Pil", None) or getattr(transformers, name)


def save_tiny_mask2former(folder: str | Path, favour: str | None = None, id2label: dict | None = None,
                          seed: int = 0) -> Path:
    """Saves a ~0.35 M-parameter Mask2Former (Swin backbone) and its image processor to ``folder``."""
    import torch
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    id2label = dict(id2label or COCO_LIKE_LABELS)
    torch.manual_seed(seed)
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=backbone, num_labels=len(id2label), id2label=id2label,
                            label2id={v: k for k, v in id2label.items()}, hidden_dim=32, num_queries=8,
                            encoder_layers=1, decoder_layers=2, num_attention_heads=2, dim_feedforward=64,
                            mask_feature_size=32, feature_size=32, encoder_feedforward_dim=64,
                            use_auxiliary_loss=False)
    model = Mask2FormerForUniversalSegmentation(cfg).eval()
    if favour is not None:  # every query predicts `favour`: semantic inference labels every pixel with it
        with torch.no_grad():
            model.class_predictor.weight.zero_()
            model.class_predictor.bias.fill_(-10.0)
            model.class_predictor.bias[{v: k for k, v in id2label.items()}[favour]] = 10.0
    model.save_pretrained(folder)
    _processor_cls("Mask2FormerImageProcessor")(size={"shortest_edge": 64, "longest_edge": 128},
                                                size_divisor=32).save_pretrained(folder)
    return Path(folder)


def save_tiny_face_parser(folder: str | Path, favour: str | None = None, id2label: dict | None = None,
                          seed: int = 0) -> Path:
    """Saves a tiny SegformerForSemanticSegmentation with CelebAMask-HQ-style labels to ``folder``."""
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    id2label = dict(id2label or FACE_PARSING_LABELS)
    torch.manual_seed(seed)
    cfg = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                          num_attention_heads=[1, 1], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2],
                          decoder_hidden_size=16, num_labels=len(id2label), id2label=id2label,
                          label2id={v: k for k, v in id2label.items()})
    model = SegformerForSemanticSegmentation(cfg).eval()
    if favour is not None:
        with torch.no_grad():
            model.decode_head.classifier.weight.zero_()
            model.decode_head.classifier.bias.fill_(-5.0)
            model.decode_head.classifier.bias[{v: k for k, v in id2label.items()}[favour]] = 5.0
    model.save_pretrained(folder)
    _processor_cls("SegformerImageProcessor")(size={"height": 64, "width": 64}).save_pretrained(folder)
    return Path(folder)

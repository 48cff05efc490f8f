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


# --------------------------------------------------------------------------------------------------
# Tokenizer and a whole SD folder
# --------------------------------------------------------------------------------------------------
# Words the tiny BPE is trained on: editing vocabulary, so instructions split into few tokens.
_TINY_BPE_CORPUS = """
make turn change convert add remove replace put give let it the a an into to of with in on at as
image photo picture painting drawing sketch style color colour black white red green blue yellow
orange purple pink brown gray grey gold silver dark bright light night day winter summer autumn
spring snow rain sunny cloudy sky sea water fire tree trees flower flowers grass mountain city
street house car cat dog horse bird person man woman face hair eyes smile glasses hat beard old
young cartoon anime watercolor oil pencil charcoal pixel art van gogh monet zoom blur sharpen
background foreground object left right top bottom more less bigger smaller edit apply effect
filter vintage sepia negative invert mirror flip rotate crop sunset sunrise starry storm fog
""".split()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode table (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tiny_clip_vocab(vocab_size: int = 1000) -> tuple[dict[str, int], list[str]]:
    """A byte-level CLIP-style BPE vocabulary of exactly ``vocab_size`` tokens, built offline.

    Layout as in CLIP's: 256 byte symbols, the same with ``</w>`` (end of word), then merges, then
    ``<|startoftext|>`` (``vocab_size - 2``) and ``<|endoftext|>`` (``vocab_size - 1``), matching
    :func:`tiny_text_encoder_config`. The merges are learnt greedily on a small built-in editing
    vocabulary (deterministic), then padded with letter-pair merges to fill the size.
    Returns ``(vocab, merges)`` with merges as ``"a b"`` strings.
    """
    from collections import Counter

    base = 512 + 2
    if vocab_size < base:
        raise ValueError(f"vocab_size: expected at least {base} (256 bytes x 2 + 2 special tokens), got {vocab_size}")
    byte_enc = _bytes_to_unicode()
    alphabet = list(byte_enc.values())
    tokens = alphabet + [c + "</w>" for c in alphabet]
    known = set(tokens)
    n_merges = vocab_size - base
    merges: list[str] = []
    words = Counter()
    for w in _TINY_BPE_CORPUS:
        sym = [byte_enc[b] for b in w.lower().encode("utf-8")]
        sym[-1] += "</w>"
        words[tuple(sym)] += 1
    while len(merges) < n_merges:
        pairs = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        # most frequent, ties broken by the pair itself: deterministic
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]), default=None)
        if best is None:
            break
        a, b = best[0]
        merged = a + b
        merges.append(f"{a} {b}")
        if merged not in known:
            tokens.append(merged)
            known.add(merged)
        new_words = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] += c
        words = new_words
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    extra = ((x, y + "</w>") for x in letters for y in letters)
    for a, b in extra:
        if len(merges) >= n_merges:
            break
        if a + b in known:
            continue
        merges.append(f"{a} {b}")
        tokens.append(a + b)
        known.add(a + b)
    if len(tokens) != vocab_size - 2:
        raise ValueError(f"vocab_size: the tiny BPE can fill at most {len(tokens) + 2} tokens, got {vocab_size}")
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tiny_tokenizer_files(folder, vocab_size: int = 1000) -> None:
    """Write CLIP-format ``vocab.json`` and ``merges.txt`` for the tiny vocabulary into ``folder``."""
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = tiny_clip_vocab(vocab_size)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def make_tiny_tokenizer(folder=None, vocab_size: int = 1000, model_max_length: int = 77):
    """A ``transformers.CLIPTokenizer`` over :func:`tiny_clip_vocab`, offline.

    With ``folder`` the tokenizer is also saved there (``save_pretrained``: loadable with
    ``CLIPTokenizer.from_pretrained(folder)``).
    """
    from transformers import CLIPTokenizer

    vocab, merges = tiny_clip_vocab(vocab_size)
    tok = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges],
                        model_max_length=model_max_length)
    if folder is not None:
        tok.save_pretrained(str(folder))
        write_tiny_tokenizer_files(folder, vocab_size)
    return tok


def sd15_scheduler_config() -> dict:
    """SD1.5's scheduler settings (``scheduler/scheduler_config.json`` of the release)."""
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
        trained_betas=None,
    )


def make_tiny_sd_components(seed: int = 0) -> dict:
    """All parts of a tiny SD pipeline: unet, vae, text_encoder, tokenizer, scheduler."""
    from diffusers import PNDMScheduler

    return dict(
        unet=make_tiny_unet(seed),
        vae=make_tiny_vae(seed + 1),
        text_encoder=make_tiny_text_encoder(seed + 2),
        tokenizer=make_tiny_tokenizer(),
        scheduler=PNDMScheduler.from_config(sd15_scheduler_config()),
    )


def save_tiny_sd(folder, seed: int = 0):
    """Write a complete tiny diffusers Stable Diffusion folder (unet, vae, text_encoder, tokenizer,
    scheduler, model_index.json) that ``StableDiffusionPipeline.from_pretrained(folder)`` loads
    offline. Returns the folder as a ``Path``."""
    from pathlib import Path

    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    pipe = StableDiffusionPipeline(**make_tiny_sd_components(seed), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    write_tiny_tokenizer_files(folder / "tokenizer")
    return folder

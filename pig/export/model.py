"""The PIG inference model in PyTorch (CLIP-ViP video tower, token selector, pseudo-query
generator, fusioner, CLIP text tower).

``PigModel(cfg).state_dict()`` has exactly the official key names, order and shapes. Every
size comes from :class:`PigConfig`. The model is trainable: everything is differentiable
except the top-k indices (as in the official code). Graph-friendly choices (exact, see the
tests): block attention by reshapes instead of a mask, finite additive masks, EOS pooling by a
one-hot of the first EOS, and the fusioner computed for each video's own pseudo-query.
"""

from __future__ import annotations

from typing import NamedTuple, cast

import torch
from torch import Tensor, nn

from pig.export.config import PigConfig

MASK_VALUE = -1e4  # finite (fp16-safe) additive mask: exp(-1e4) underflows to exactly 0


class VideoOutputs(NamedTuple):
    """Video branch results; names mirror the official reference outputs."""

    embed: Tensor  # [B, D] final PIG vector (fusioner output)
    embed_norm: Tensor  # [B, D] unit vector used for retrieval
    clip_embed: Tensor  # [B, D] plain CLIP-ViP vector (projected video CLS)
    clip_embed_norm: Tensor
    topk_indices: Tensor  # [B, k] int64 sequence positions, descending score
    topk_scores: Tensor  # [B, k]
    cls_attn_maxhead: Tensor  # [B, N] selector score row (heads merged), unmasked
    generator_input_tokens: Tensor  # [B, G, D] generator tokens before video_mapper
    pseudo_query: Tensor  # [B, D]
    fusioner_tokens: Tensor  # [B, F, D] fusioner keys/values


class TextOutputs(NamedTuple):
    embed: Tensor  # [B, D] text_projection(EOS feature); the generator loss target
    embed_norm: Tensor  # [B, D]
    eos_hidden: Tensor  # [B, W] final-LN feature at the first EOS, before text_projection


def quick_gelu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(1.702 * x)


def causal_mask(n: int, device: torch.device) -> Tensor:
    """[n, n] additive mask: 0 on and below the diagonal, MASK_VALUE above."""
    return torch.full((n, n), MASK_VALUE, device=device).triu(1)


class Attention(nn.Module):
    """CLIP self-attention (parameter order k, v, q, out as in the official checkpoint)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """[B, N, W] -> three [B, H, N, W/H]; q already scaled."""
        b, n, w = x.shape

        def split(t: Tensor) -> Tensor:
            return t.reshape(b, n, self.heads, w // self.heads).transpose(1, 2)

        return split(self.q_proj(x) * self.scale), split(self.k_proj(x)), split(self.v_proj(x))

    def merge(self, o: Tensor) -> Tensor:
        """[B, H, N, d] -> out_proj([B, N, H*d])."""
        return self.out_proj(o.transpose(1, 2).flatten(2))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = self.qkv(x)
        logits = q @ k.transpose(-1, -2)
        if mask is not None:
            logits = logits + mask
        return self.merge(logits.softmax(-1) @ v)


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(quick_gelu(self.fc1(x)))


class EncoderLayer(nn.Module):
    """Pre-LN transformer layer (official key order: self_attn, layer_norm1, mlp, layer_norm2)."""

    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.self_attn = Attention(width, heads)
        self.layer_norm1 = nn.LayerNorm(width)
        self.mlp = MLP(width, hidden)
        self.layer_norm2 = nn.LayerNorm(width)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(width, heads, hidden) for _ in range(layers))


class TextEmbeddings(nn.Module):
    def __init__(self, vocab: int, positions: int, width: int) -> None:
        super().__init__()
        self.register_buffer("position_ids", torch.arange(positions).unsqueeze(0))
        self.token_embedding = nn.Embedding(vocab, width)
        self.position_embedding = nn.Embedding(positions, width)


class TextTransformer(nn.Module):
    """CLIP text tower: causal transformer, final LN, pooled at the first EOS."""

    def __init__(self, cfg: PigConfig) -> None:
        super().__init__()
        self.eos_id = cfg.eos_id
        self.embeddings = TextEmbeddings(cfg.vocab_size, cfg.text_positions, cfg.text_width)
        self.encoder = Encoder(cfg.text_width, cfg.text_layers, cfg.text_heads, cfg.text_mlp)
        self.final_layer_norm = nn.LayerNorm(cfg.text_width)

    def forward(self, input_ids: Tensor) -> Tensor:
        """[B, L] int64 -> [B, W] feature at the first EOS.

        With pad = EOS, the causal mask alone gives the official result at the first EOS:
        that position never sees the padding, so no padding mask (and no second input).
        """
        n = input_ids.shape[1]
        x = self.embeddings.token_embedding(input_ids)
        x = x + self.embeddings.position_embedding.weight[:n]
        mask = causal_mask(n, x.device)
        for layer in self.encoder.layers:
            x = layer(x, mask)
        x = self.final_layer_norm(x)
        is_eos = (input_ids == self.eos_id).to(x.dtype)
        first_eos = is_eos * (is_eos.cumsum(1) == 1).to(x.dtype)  # one-hot, no ArgMax ties
        return (first_eos.unsqueeze(1) @ x).squeeze(1)


class VisionEmbeddings(nn.Module):
    """CLIP-ViP embeddings: [video CLS, proxies, per frame (in-frame CLS, patches)]."""

    def __init__(self, cfg: PigConfig) -> None:
        super().__init__()
        w = cfg.vision_width
        self.added_cls = nn.Parameter(torch.zeros(cfg.num_proxy, w))
        self.class_embedding = nn.Parameter(torch.zeros(w))
        self.cls_in_frames = nn.Parameter(torch.zeros(w))
        self.temporal_embedding = nn.Parameter(torch.zeros(1, cfg.num_frames, w))
        self.register_buffer("position_ids", torch.arange(cfg.frame_len).unsqueeze(0))
        self.patch_embedding = nn.Conv2d(3, w, cfg.patch_size, cfg.patch_size, bias=False)
        self.position_embedding = nn.Embedding(cfg.frame_len, w)

    def forward(self, pixel_values: Tensor) -> Tensor:
        b, t, c, h, w = pixel_values.shape
        pos = self.position_embedding.weight
        time = self.temporal_embedding.unsqueeze(2)  # [1, T, 1, W]
        patches = self.patch_embedding(pixel_values.reshape(b * t, c, h, w))
        patches = patches.flatten(2).transpose(1, 2).reshape(b, t, -1, patches.shape[1])
        patches = patches + time + pos[1:]
        frame_cls = (self.cls_in_frames + time + pos[0]).expand(b, -1, -1, -1)
        frames = torch.cat([frame_cls, patches], dim=2).flatten(1, 2)
        glob = torch.cat([self.class_embedding.unsqueeze(0), self.added_cls]) + pos[0]
        return torch.cat([glob.expand(b, -1, -1), frames], dim=1)


class VisionTransformer(nn.Module):
    """CLIP-ViP tower with block attention: the global tokens attend to everything; a frame
    token attends to the globals and its own frame. Same q/k/v/out weights for both."""

    def __init__(self, cfg: PigConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = VisionEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.vision_width)
        self.encoder = Encoder(cfg.vision_width, cfg.vision_layers, cfg.vision_heads,
                               cfg.vision_mlp)
        self.post_layernorm = nn.LayerNorm(cfg.vision_width)

    def block_attention(self, attn: Attention, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns the attention output [B, N, W] and the globals' probabilities [B, H, M, N]."""
        m, t, fl = self.cfg.num_global, self.cfg.num_frames, self.cfg.frame_len
        q, k, v = attn.qkv(x)
        b, h, _, d = q.shape
        g_probs = (q[:, :, :m] @ k.transpose(-1, -2)).softmax(-1)
        g_out = g_probs @ v

        def frames(z: Tensor) -> Tensor:  # [B,H,N,d] -> [B,H,T,M+FL,d]: globals + own frame
            own = z[:, :, m:].reshape(b, h, t, fl, d)
            return torch.cat([z[:, :, :m].unsqueeze(2).expand(-1, -1, t, -1, -1), own], 3)

        qf = q[:, :, m:].reshape(b, h, t, fl, d)
        f_out = ((qf @ frames(k).transpose(-1, -2)).softmax(-1) @ frames(v)).flatten(2, 3)
        return attn.merge(torch.cat([g_out, f_out], dim=2)), g_probs

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        """-> last hidden state [B, N, W] and the last layer's global-query probabilities."""
        x = self.pre_layrnorm(self.embeddings(pixel_values))
        probs = x.new_empty(0)
        for layer in cast(list[EncoderLayer], self.encoder.layers):
            a, probs = self.block_attention(layer.self_attn, layer.layer_norm1(x))
            x = x + a
            x = x + layer.mlp(layer.layer_norm2(x))
        return x, probs


class ClipModel(nn.Module):
    def __init__(self, cfg: PigConfig) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(4.6))  # training only
        self.text_model = TextTransformer(cfg)
        self.vision_model = VisionTransformer(cfg)
        self.visual_projection = nn.Linear(cfg.vision_width, cfg.embed_dim, bias=False)
        self.text_projection = nn.Linear(cfg.text_width, cfg.embed_dim, bias=False)


class VidClip(nn.Module):
    def __init__(self, cfg: PigConfig) -> None:
        super().__init__()
        self.clipmodel = ClipModel(cfg)


class PseudoQueryGenerator(nn.Module):
    """A second CLIP text transformer over [BOS, video_mapper(tokens), EOS]; causal; the
    final-LN output at the last position is the pseudo-query."""

    def __init__(self, cfg: PigConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.special_ids = (cfg.bos_id, cfg.eos_id)
        self.embeddings = TextEmbeddings(cfg.gen_vocab_size, cfg.gen_positions, d)
        self.encoder = Encoder(d, cfg.gen_layers, cfg.gen_heads, cfg.gen_mlp)
        self.final_layer_norm = nn.LayerNorm(d)
        self.video_mapper = nn.Linear(d, d)

    def special_tokens(self) -> Tensor:
        """[2, D] BOS/EOS input embeddings: constants taken from the (frozen) token table."""
        return self.embeddings.token_embedding.weight[list(self.special_ids)].detach()

    def forward(self, tokens: Tensor, special: Tensor) -> Tensor:
        b = tokens.shape[0]
        bos, eos = (s.expand(b, 1, -1) for s in special.unsqueeze(1))
        x = torch.cat([bos, self.video_mapper(tokens), eos], dim=1)
        n = x.shape[1]
        x = x + self.embeddings.position_embedding.weight[:n]
        mask = causal_mask(n, x.device)
        for layer in self.encoder.layers:
            x = layer(x, mask)
        return self.final_layer_norm(x[:, -1])


class Generator(nn.Module):
    def __init__(self, cfg: PigConfig) -> None:
        super().__init__()
        self.clip_reconstructor = PseudoQueryGenerator(cfg)


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, temp: float) -> None:
        super().__init__()
        self.heads, self.temp = heads, temp
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, query: Tensor, tokens: Tensor) -> Tensor:
        """query [B, D] attends over its own video's tokens [B, F, D]."""
        b, f, d = tokens.shape
        h = self.heads
        q = self.q_proj(query).reshape(b, h, 1, d // h)
        k = self.k_proj(tokens).reshape(b, f, h, d // h).transpose(1, 2)
        v = self.v_proj(tokens).reshape(b, f, h, d // h).transpose(1, 2)
        logits = (q @ k.transpose(-1, -2)) / ((d // h) ** 0.5 * self.temp)
        return self.out_proj((logits.softmax(-1) @ v).reshape(b, d))


class Fusioner(nn.Module):
    """X-Pool cross-attention pooling, evaluated on the diagonal (video i, its own query)."""

    def __init__(self, cfg: PigConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.cross_attn = CrossAttention(d, cfg.fusion_heads, cfg.fusion_temp)
        self.linear_proj = nn.Linear(d, d)
        self.layer_norm1 = nn.LayerNorm(d)
        self.layer_norm2 = nn.LayerNorm(d)
        self.layer_norm3 = nn.LayerNorm(d)

    def forward(self, query: Tensor, tokens: Tensor) -> Tensor:
        a = self.layer_norm2(self.cross_attn(self.layer_norm1(query), self.layer_norm1(tokens)))
        return self.layer_norm3(a + self.linear_proj(a))


def _normalize(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True)


class PigModel(nn.Module):
    """PIG with the official parameter names; see the module docstring."""

    def __init__(self, cfg: PigConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = VidClip(cfg)
        if cfg.two_matrix:  # official name; first key (own parameters precede children's)
            self.alpha = nn.Parameter(torch.tensor(0.5))
        self.generator = Generator(cfg)
        self.fusioner = Fusioner(cfg)
        m, fl, t = cfg.num_global, cfg.frame_len, cfg.num_frames
        fixed = list(range(m)) + [m + i * fl for i in range(t)]  # vCLS, proxies, in-frame CLS
        penalty = torch.zeros(cfg.seq_len)
        penalty[fixed] = -2.0  # scores are probabilities in [0, 1]: never selected
        self.register_buffer("_fixed_idx", torch.tensor(fixed), persistent=False)
        self.register_buffer("_select_penalty", penalty, persistent=False)

    def _project(self, hidden: Tensor) -> Tensor:
        clip = self.encoder.clipmodel
        return clip.visual_projection(clip.vision_model.post_layernorm(hidden))

    def encode_video(self, pixel_values: Tensor, special_tokens: Tensor | None = None
                     ) -> VideoOutputs:
        """pixel_values [B, T, 3, S, S] (normalised) -> :class:`VideoOutputs`.

        ``special_tokens`` ([2, D] BOS/EOS) defaults to the generator's token-table rows; the
        ONNX wrapper passes a copy so the graph does not carry the whole table.
        """
        gen = self.generator.clip_reconstructor
        if special_tokens is None:
            special_tokens = gen.special_tokens()
        hidden, probs = self.encoder.clipmodel.vision_model(pixel_values)
        heads_merged = probs.amax(1) if self.cfg.head_reduce == "max" else probs.mean(1)
        scores = heads_merged[:, 0]  # video-CLS query row
        # penalty is exactly 0 at eligible positions, so the values are the raw scores
        topk_scores, topk_idx = torch.topk(scores + self._select_penalty, self.cfg.top_k, dim=-1)
        fixed_tokens = self._project(hidden[:, self._fixed_idx])
        picked = torch.gather(hidden, 1, topk_idx.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        gen_in = torch.cat([fixed_tokens, self._project(picked)], dim=1)
        pseudo_query = gen(gen_in, special_tokens)
        embed = self.fusioner(pseudo_query, fixed_tokens)
        clip_embed = fixed_tokens[:, 0]
        return VideoOutputs(embed, _normalize(embed), clip_embed, _normalize(clip_embed),
                            topk_idx, topk_scores, scores, gen_in, pseudo_query, fixed_tokens)

    def retrieval_vector(self, o: VideoOutputs) -> Tensor:
        """The vector a video is searched by: its unit PIG vector, or for the two-matrix
        variant ``clip_unit + alpha * fused_unit`` (not unit length), whose inner product with
        a unit text vector is the official score ``t.clip + alpha * t.fused``."""
        if self.cfg.two_matrix:
            return o.clip_embed_norm + self.alpha * o.embed_norm
        return o.embed_norm

    def encode_clip_vip(self, pixel_values: Tensor) -> Tensor:
        """The plain CLIP-ViP video vector (projected video CLS, not normalised), computed
        without the selector, generator and fusioner (equals ``encode_video(...).clip_embed``)."""
        hidden, _ = self.encoder.clipmodel.vision_model(pixel_values)
        return self._project(hidden[:, 0])

    def encode_text(self, input_ids: Tensor) -> TextOutputs:
        """input_ids [B, L] int64 (BOS ... EOS, padded with EOS) -> :class:`TextOutputs`."""
        clip = self.encoder.clipmodel
        eos_hidden = clip.text_model(input_ids)
        embed = clip.text_projection(eos_hidden)
        return TextOutputs(embed, _normalize(embed), eos_hidden)

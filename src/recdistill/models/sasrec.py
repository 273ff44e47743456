"""SASRec: causal self-attention over a user's item sequence, for next-item prediction.

Wang-Cheng Kang, Julian McAuley. "Self-Attentive Sequential Recommendation". ICDM 2018,
arXiv:1808.09781. Reference code: https://github.com/kang205/SASRec (and its PyTorch port
https://github.com/pmixer/SASRec.pytorch).

Blocks are pre-norm as the paper writes them, ``x + Dropout(f(LayerNorm(x)))`` for the
attention and the point-wise feed-forward sublayers, with a final LayerNorm. Padding (token 0)
is masked as an attention key, its hidden states are zeroed after every block, and losses
and rankings skip it (``transfer.soft_targets``, ``recdistill.seq``).

Deviations: the reference code adds the attention residual to ``LayerNorm(x)`` rather than to
``x`` (we follow the paper's formula); the feed-forward layer is ``nn.Linear`` instead of an
equivalent 1x1 ``Conv1d``; position embeddings are indexed by distance from the most recent
item, which is what the reference's right-aligned padding to ``max_len`` amounts to, and makes
scores independent of how much padding a batch carries; no dropout on the attention weights
(the reference has it; on CPU its Bernoulli draws over (B, L, L) took ~30% of an epoch).

Shapes: B batch, L sequence length, D hidden dim, h heads, I items (tokens 1..I, 0 = padding).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from torch import nn

from recdistill.models.registry import Arch
from recdistill.params import Count, Number

__all__ = ["SASRec", "SasrecArch"]


class SasrecArch(Arch):
    """A SASRec ``model:`` block of ``params.yaml`` (the sizes that do not come from the data).

    >>> SasrecArch(name="sasrec", hidden_dim=64, n_blocks=2, n_heads=3, dropout=0.2)
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for SasrecArch
    n_heads
      a divisor of hidden_dim (64) [type=divisor, input_value=3, input_type=int]
    """

    name: Literal["sasrec"]
    hidden_dim: Count  # embedding and hidden size D
    n_blocks: Count  # self-attention blocks
    n_heads: Count  # attention heads; divides hidden_dim
    dropout: Annotated[Number, Field(ge=0, lt=1)]  # on embeddings and sublayer outputs

    @field_validator("n_heads")
    @classmethod
    def _heads_divide_width(cls, n_heads: int, info: ValidationInfo) -> int:
        hidden_dim = info.data.get("hidden_dim")  # absent when it failed its own check
        if hidden_dim is not None and hidden_dim % n_heads:
            raise PydanticCustomError("divisor", "a divisor of hidden_dim ({hidden_dim})",
                                      {"hidden_dim": hidden_dim})
        return n_heads


class _Block(nn.Module):
    """Causal multi-head self-attention then a point-wise feed-forward layer, pre-norm."""

    def __init__(self, hidden_dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        assert hidden_dim % n_heads == 0, f"hidden_dim {hidden_dim} must divide into {n_heads} heads"
        self._heads = n_heads
        self.attn_norm, self.ffn_norm = nn.LayerNorm(hidden_dim), nn.LayerNorm(hidden_dim)
        self.qkv = nn.Linear(hidden_dim, 3 * hidden_dim)
        self.proj = nn.Linear(hidden_dim, hidden_dim)
        self.ffn = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden_dim, hidden_dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) float; attend: (B, 1, L, L) bool, True where a query may see a key."""
        B, L, D = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).split(D, dim=-1)  # 3 x (B, L, D)
        q, k, v = (t.view(B, L, self._heads, D // self._heads).transpose(1, 2)
                   for t in (q, k, v))  # 3 x (B, h, L, D/h)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)  # (B, h, L, D/h)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, L, D)))  # (B, L, D)
        return x + self.drop(self.ffn(self.ffn_norm(x)))  # (B, L, D)


class SASRec(nn.Module):
    r"""Hidden state per position; the score of token ``j`` is :math:`\langle h_t, e_j \rangle`.

    Args:
        n_items: number of items I (tokens 1..I; token 0 is padding).
        max_len: longest input sequence L (rows of the position table).
        hidden_dim: embedding and hidden size D.
        n_blocks: self-attention blocks.
        n_heads: attention heads (divides D).
        dropout: dropout rate on embeddings and sublayer outputs.

    Example:
        >>> model = SASRec(n_items=5, max_len=4, hidden_dim=8, n_blocks=1, n_heads=2, dropout=0.0)
        >>> seq = torch.tensor([[0, 0, 3, 1], [2, 5, 4, 1]])
        >>> model(seq).shape, model.logits(model(seq)).shape
        (torch.Size([2, 4, 8]), torch.Size([2, 4, 6]))
        >>> torch.equal(model(seq)[0, :2], torch.zeros(2, 8))  # padding positions are zero
        True
    """

    def __init__(self, n_items: int, max_len: int, hidden_dim: int, n_blocks: int,
                 n_heads: int, dropout: float) -> None:
        super().__init__()
        self._max_len, self._dim = max_len, hidden_dim
        self.item_emb = nn.Embedding(n_items + 1, hidden_dim, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, hidden_dim)
        self.emb_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(hidden_dim, n_heads, dropout) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(hidden_dim)
        for name, weight in self.named_parameters():  # Xavier normal, as the reference code
            if weight.dim() > 1:
                nn.init.xavier_normal_(weight)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq: (B, L) int64 tokens, left-padded with 0 -> hidden states (B, L, D) float32.

        The state at position t depends on tokens at positions <= t only; padded positions
        are zero.
        """
        B, L = seq.shape
        assert L <= self._max_len, f"sequence length {L} exceeds max_len {self._max_len}"
        keep = seq != 0  # (B, L)
        recency = torch.arange(L - 1, -1, -1, device=seq.device)  # (L,) 0 = most recent
        x = self.item_emb(seq) * math.sqrt(self._dim) + self.pos_emb(recency)  # (B, L, D)
        x = self.emb_drop(x) * keep[..., None]  # (B, L, D)
        causal = torch.ones(L, L, dtype=torch.bool, device=seq.device).tril()  # (L, L)
        self_only = torch.eye(L, dtype=torch.bool, device=seq.device)  # (L, L) padded queries
        attend = (causal & keep[:, None, :]) | self_only  # (B, L, L)
        for block in self.blocks:
            x = block(x, attend[:, None]) * keep[..., None]  # (B, L, D)
        return self.norm(x) * keep[..., None]  # (B, L, D)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every token: hidden (..., D) -> (..., I + 1); column 0 is padding."""
        return hidden @ self.item_emb.weight.T  # (..., I + 1)

    def pair_scores(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Scores of given tokens: hidden (..., D), tokens (...,) int64 -> (...,)."""
        return (hidden * self.item_emb(tokens)).sum(-1)  # (...,)

    def score_last(self, seq: torch.Tensor) -> torch.Tensor:
        """Next-item scores after each sequence: seq (B, L) -> (B, I + 1)."""
        return self.logits(self.forward(seq)[:, -1])  # (B, I + 1)

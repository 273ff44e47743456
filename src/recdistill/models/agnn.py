"""AGNN: attribute graph neural network for (strict cold start) rating prediction.

Tieyun Qian, Yile Liang, Qing Li, Hui Xiong. "Attribute Graph Neural Networks for Strict
Cold Start Recommendation". IEEE TKDE, 2020 (arXiv id: none known). Reference code: the
ML-100K notebook in shared/reference, from https://github.com/sparsh-ai/coldstart-recsys.

Per node type (users, items): multi-hot attributes are pooled through an attribute
embedding table into a linear part and a Bi-Interaction part (He and Chua, NFM, 2017); a
node's self embedding and its neighbor message combine attributes with a preference
embedding; a gated GNN layer aggregates sampled k-NN neighbors (add gate per neighbor and
dimension, erase gate on the node); an extended VAE (eVAE) maps attributes to the
preference embedding, and cold nodes (no train ratings) use its output instead of their
untrained preference embedding (and no bias). Rating = MLP([p; q]) + <p, q> + b_u + b_i + mu.

Deviations: the self and neighbor paths have their own interaction layers on both sides
(the reference reuses the neighbor layer for the user's own features); every layer is
initialised; the KL term uses the log-variance (the reference uses exp(z)); a cold node
gets the decoded eVAE *mean* (the sampled decoding only feeds the reconstruction term);
neighbors come with weights, so evaluation aggregates all K neighbors weighted by their
sampling probabilities instead of one random draw (close to, not exactly, the expectation of
the training-time draw without replacement, which flattens the weights; see
coldstart/training.py); the predictor MLP has one hidden layer as the paper says (the reference has none);
attribute encodings, eVAE and messages are computed for all nodes of a type at once and
the gated layer once per distinct node of a batch, so a batch is index gathers.

Shapes: B batch, N nodes of one type, F attribute values, M neighbors per node, D dim.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from recdistill.models.multihot import MultiHot, SparseRowSum, csr_pair
from recdistill.models.registry import Arch
from recdistill.params import Count

__all__ = ["AgnnArch", "AGNN", "NodeSide", "kl_divergence"]


class AgnnArch(Arch):
    """``train.agnn.model``: AGNN's sizes, its neighbor sample and which attributes it embeds."""

    name: Literal["agnn"]
    embed_dim: Count  # D
    n_neighbors: Count  # M, sampled per node and batch from its k-NN list
    hidden_dim: Count  # the predictor MLP's hidden width
    min_warm_holders: Count  # attribute values held by fewer nodes with train ratings get no embedding


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row: (B, D) -> (B,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)  # (B,)


def _linear(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class NodeSide(nn.Module):
    """Everything AGNN keeps for one node type: embeddings, encoders, gates, eVAE."""

    attr: torch.Tensor  # buffers, registered in __init__
    attr_t: torch.Tensor
    cold: torch.Tensor

    def __init__(self, attributes: MultiHot, cold: torch.Tensor, embed_dim: int) -> None:
        super().__init__()
        n, n_attr = len(attributes.offsets) - 1, attributes.n_values
        assert cold.shape == (n,), f"cold mask must be ({n},), got {tuple(cold.shape)}"
        x, x_t = csr_pair(attributes)  # (N, F), (F, N)
        self.register_buffer("attr", x, persistent=False)  # (N, F)
        self.register_buffer("attr_t", x_t, persistent=False)  # (F, N)
        self.register_buffer("cold", cold.bool(), persistent=False)  # (N,)
        self.preference = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n, embed_dim)))
        self.attribute = nn.Parameter(torch.randn(max(n_attr, 1), embed_dim) * 0.05)
        self.bias = nn.Parameter(torch.zeros(n))
        self.bi, self.lin = _linear(embed_dim, 2 * embed_dim), _linear(embed_dim, 2 * embed_dim)  # self | nbr
        self.proj_self, self.proj_nbr = _linear(2 * embed_dim, embed_dim), _linear(2 * embed_dim, embed_dim)
        self.add_gate, self.erase_gate = _linear(2 * embed_dim, embed_dim), _linear(2 * embed_dim, embed_dim)
        self.enc, self.enc_mu, self.enc_logvar = (_linear(embed_dim, embed_dim) for _ in range(3))
        self.dec_hidden, self.dec_out = _linear(embed_dim, embed_dim), _linear(embed_dim, embed_dim)

    def _pool(self, table: torch.Tensor) -> torch.Tensor:
        """Sum of each node's attribute rows: (N, D)."""
        return SparseRowSum.apply(self.attr, self.attr_t, table)  # (N, D)

    def encode_vae(self, attr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | attributes): mean and log-variance, (N, D) each."""
        h = F.relu(self.enc(attr))  # (N, D)
        return self.enc_mu(h), self.enc_logvar(h)  # (N, D), (N, D)

    def decode_vae(self, z: torch.Tensor) -> torch.Tensor:
        """p(preference | z): (N, D) -> (N, D)."""
        return self.dec_out(F.relu(self.dec_hidden(z)))  # (N, D)

    def tables(self) -> dict[str, torch.Tensor]:
        """Self embeddings, neighbor messages, biases and eVAE terms of all N nodes.

        Cold nodes use the eVAE's preference embedding and no bias.
        """
        total = self._pool(self.attribute)  # (N, D) sum of attribute embeddings
        squares = self._pool(self.attribute.pow(2))  # (N, D) sum of their squares
        bi = 0.5 * (total.pow(2) - squares)  # (N, D) Bi-Interaction pooling
        a = F.leaky_relu(self.bi(bi)) + F.leaky_relu(self.lin(total))  # (N, 2D) interaction layer
        a_self, a_nbr = a.chunk(2, dim=-1)  # (N, D) own features, (N, D) as a neighbor
        mu, logvar = self.encode_vae(a_self)  # (N, D), (N, D)
        generated = self.decode_vae(mu)  # (N, D) the preference a cold node gets: decoded mean
        pref = torch.where(self.cold[:, None], generated, self.preference)  # (N, D)
        if self.training:  # the reconstruction term decodes a sample (reparameterised)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # (N, D)
            sampled = self.decode_vae(z)  # (N, D)
        else:
            sampled = generated  # (N, D)
        message = self.proj_nbr(torch.cat([a_nbr, pref], -1))  # (N, D)
        d = message.shape[1]
        return {"self": self.proj_self(torch.cat([a_self, pref], -1)),  # (N, D)
                "message": message,  # the add gate is linear in [self; message]: its message
                "gate": F.linear(message, self.add_gate.weight[:, d:]),  # half per node (N, D)
                "bias": torch.where(self.cold, torch.zeros_like(self.bias), self.bias),  # (N,)
                "sampled": sampled, "mu": mu, "logvar": logvar}

    def aggregate(self, t: dict[str, torch.Tensor], nodes: torch.Tensor, nbr: torch.Tensor,
                  weight: torch.Tensor) -> torch.Tensor:
        """Gated GNN layer for ``nodes`` (B,) over neighbors ``nbr`` (B, M) weighted (B, M)."""
        s = t["self"][nodes]  # (B, D)
        h = t["message"][nbr]  # (B, M, D)
        w = weight.unsqueeze(-1)  # (B, M, 1)
        gate_self = F.linear(s, self.add_gate.weight[:, :s.shape[1]], self.add_gate.bias)  # (B, D)
        add = torch.sigmoid(gate_self.unsqueeze(1) + t["gate"][nbr])  # (B, M, D)
        h_bar = (w * h).sum(1)  # (B, D) weighted mean message
        erase = torch.sigmoid(self.erase_gate(torch.cat([s, h_bar], -1)))  # (B, D)
        return F.leaky_relu((1 - erase) * s + (w * add * h).sum(1))  # (B, D)


class AGNN(nn.Module):
    """Rating predictor over user and item attribute graphs.

    Args:
        user_attributes, item_attributes: (U, F_u), (I, F_i) multi-hot attributes.
        user_cold, item_cold: (U,), (I,) bool, nodes without train ratings.
        embed_dim: D; hidden_dim: width of the predictor MLP's hidden layer.

    Example:
        >>> attrs = MultiHot.from_dense(torch.tensor([[1., 0., 1.], [0., 1., 0.]]))
        >>> model = AGNN(attrs, attrs, torch.tensor([False, True]), torch.zeros(2, dtype=torch.bool), 4, 3)
        >>> nbr, w = torch.tensor([[1], [0]]), torch.ones(2, 1)
        >>> users, items = torch.tensor([0, 1, 1]), torch.tensor([1, 1, 0])
        >>> rating, recon, kl = model(users, items, nbr, w, nbr, w)  # neighbors of every node
        >>> rating.shape, recon.shape, kl.shape
        (torch.Size([3]), torch.Size([3]), torch.Size([3]))
        >>> p, q, bu, bi = model.eval().representations(nbr, w, nbr, w)  # all nodes at once
        >>> torch.allclose(model.predict(p[users], q[items], bu[users], bi[items]),
        ...                model(users, items, nbr, w, nbr, w)[0])
        True
    """

    def __init__(self, user_attributes: MultiHot, item_attributes: MultiHot,
                 user_cold: torch.Tensor, item_cold: torch.Tensor, embed_dim: int,
                 hidden_dim: int) -> None:
        super().__init__()
        self.user = NodeSide(user_attributes, user_cold, embed_dim)
        self.item = NodeSide(item_attributes, item_cold, embed_dim)
        self.hidden = _linear(2 * embed_dim, hidden_dim)
        self.out = _linear(hidden_dim, 1)
        self.mu = nn.Parameter(torch.zeros(()))

    def predict(self, p: torch.Tensor, q: torch.Tensor, bu: torch.Tensor, bi: torch.Tensor
                ) -> torch.Tensor:
        """Rating from final representations p, q (B, D) and biases bu, bi (B,): (B,)."""
        mlp = self.out(F.leaky_relu(self.hidden(torch.cat([p, q], -1)))).squeeze(-1)  # (B,)
        return mlp + (p * q).sum(-1) + bu + bi + self.mu  # (B,)

    def forward(self, users: torch.Tensor, items: torch.Tensor, user_nbr: torch.Tensor,
                user_w: torch.Tensor, item_nbr: torch.Tensor, item_w: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """users, items: (B,) int64; user_nbr, user_w: (U, M) neighbor ids (int64) and weights
        of *every* user, item_nbr, item_w: (I, M) of every item (row = node id).

        Each distinct node of the batch is encoded once. Returns the predicted rating (B,),
        the eVAE reconstruction error (B,) (squared distance of the sampled decoding to the
        learned preference embedding, user + item) and the KL term (B,) (user + item).
        """
        tu, ti = self.user.tables(), self.item.tables()
        uu, u_at = torch.unique(users, return_inverse=True)  # (B_u,) distinct users, (B,) where
        ii, i_at = torch.unique(items, return_inverse=True)  # (B_i,), (B,)
        p = self.user.aggregate(tu, uu, user_nbr[uu], user_w[uu])[u_at]  # (B, D)
        q = self.item.aggregate(ti, ii, item_nbr[ii], item_w[ii])[i_at]  # (B, D)
        recon = ((tu["sampled"][users] - self.user.preference[users]).pow(2).sum(-1)
                 + (ti["sampled"][items] - self.item.preference[items]).pow(2).sum(-1))  # (B,)
        kl = (kl_divergence(tu["mu"][users], tu["logvar"][users])
              + kl_divergence(ti["mu"][items], ti["logvar"][items]))  # (B,)
        return self.predict(p, q, tu["bias"][users], ti["bias"][items]), recon, kl

    @torch.no_grad()
    def representations(self, user_nbr: torch.Tensor, user_w: torch.Tensor, item_nbr: torch.Tensor,
                        item_w: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Final representations of all users (U, D) and items (I, D), and their biases
        (U,), (I,), for evaluation (cold nodes use the eVAE)."""
        tu, ti = self.user.tables(), self.item.tables()
        users = torch.arange(len(user_nbr), device=user_nbr.device)  # (U,)
        items = torch.arange(len(item_nbr), device=item_nbr.device)  # (I,)
        return (self.user.aggregate(tu, users, user_nbr, user_w),  # (U, D)
                self.item.aggregate(ti, items, item_nbr, item_w),  # (I, D)
                tu["bias"], ti["bias"])  # (U,), (I,)

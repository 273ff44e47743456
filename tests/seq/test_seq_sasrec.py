"""SASRec: causality, padding invariance, masking."""

from __future__ import annotations

import torch

from recdistill.models.sasrec import SASRec


def _model(blocks: int = 2, heads: int = 2) -> SASRec:
    torch.manual_seed(0)
    return SASRec(n_items=20, max_len=12, hidden_dim=16, n_blocks=blocks, n_heads=heads,
                  dropout=0.3).eval()


def test_output_at_t_ignores_later_items() -> None:
    model = _model()
    seq = torch.tensor([[0, 0, 4, 7, 1, 9, 3, 12]])
    changed = seq.clone()
    changed[0, 5:] = torch.tensor([17, 2, 5])
    a, b = model(seq), model(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=0)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_padding_does_not_change_scores() -> None:
    model = _model()
    short = torch.tensor([[3, 8, 1, 14]])
    padded = torch.tensor([[0, 0, 0, 0, 0, 3, 8, 1, 14]])
    torch.testing.assert_close(model(padded)[:, -4:], model(short), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.score_last(padded), model.score_last(short), rtol=1e-5, atol=1e-5)
    # a batch mate with a longer sequence does not change it either
    batch = torch.tensor([[0, 0, 0, 0, 0, 3, 8, 1, 14], [5, 6, 7, 8, 9, 10, 11, 12, 13]])
    torch.testing.assert_close(model.score_last(batch)[:1], model.score_last(short), rtol=1e-5, atol=1e-5)
    assert torch.equal(model(padded)[0, :5], torch.zeros(5, 16))


def test_scores_are_dot_products_with_item_embeddings() -> None:
    model = _model(blocks=1, heads=1)
    seq = torch.tensor([[0, 2, 5, 6]])
    h = model(seq)  # (1, 4, D)
    expected = h[0, -1] @ model.item_emb.weight.T
    torch.testing.assert_close(model.score_last(seq)[0], expected)
    torch.testing.assert_close(model.pair_scores(h[0], torch.tensor([1, 2, 3, 4])),
                               (h[0] * model.item_emb.weight[1:5]).sum(-1))


def test_padding_embedding_gets_no_gradient() -> None:
    model = _model().train()
    model(torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4]])).sum().backward()
    assert model.item_emb.weight.grad is not None
    assert torch.equal(model.item_emb.weight.grad[0], torch.zeros(16))

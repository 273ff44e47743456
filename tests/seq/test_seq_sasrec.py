"""SASRec: causality, padding invariance, masking; its architecture block and registry entry."""

from __future__ import annotations

import pytest
import torch
from repo_params import repo_params

from recdistill import seq
from recdistill.models.sasrec import SASRec, SasrecArch
from recdistill.params import ParamsError


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


def test_registry_builds_the_blocks_of_params_yaml() -> None:
    p = repo_params()
    context = seq.SeqContext(n_items=20, max_len=12)
    for block, path in ((p.train.seq.model, "train.seq.model"),
                        (p.distill.seq.student.model, "distill.seq.student.model")):
        arch = seq.MODELS.arch(block, path)
        assert isinstance(arch, SasrecArch) and arch.model_dump() == block.model_dump()
        model = seq.MODELS.build(arch, context)
        assert isinstance(model, SASRec) and len(model.blocks) == arch.n_blocks
        assert model.item_emb.weight.shape == (21, arch.hidden_dim) and model.pos_emb.num_embeddings == 12


def test_registry_names_the_bad_key() -> None:
    block = {"name": "sasrec", "hidden_dim": 64, "n_blocks": 2, "n_heads": 3, "dropout": 0.2}
    with pytest.raises(ParamsError, match=r"^params.yaml: train.seq.model.n_heads = 3 is invalid: "
                                          r"expected a divisor of hidden_dim \(64\)$"):
        seq.MODELS.arch(block, "train.seq.model")
    with pytest.raises(ParamsError, match=r"distill.seq.student.model.dropout = 1.0 is invalid: expected a value < 1"):
        seq.MODELS.arch({**block, "n_heads": 2, "dropout": 1.0}, "distill.seq.student.model")
    with pytest.raises(ParamsError, match=r"train.seq.model.name = 'gru4rec' is invalid: expected one of 'sasrec'"):
        seq.MODELS.arch({**block, "name": "gru4rec"}, "train.seq.model")


def test_a_model_without_the_track_surface_is_refused() -> None:
    with pytest.raises(TypeError, match="Linear is not a seq model: it lacks item_emb, logits, pair_scores, score_last"):
        seq.seq_model(torch.nn.Linear(2, 2))

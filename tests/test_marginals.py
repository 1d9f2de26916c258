"""Target weights of a trained potential: the relaxed marginal, group by group."""

import pytest
import torch
from torch import nn

from uotlib import marginals
from uotlib.config import TrainConfig


class Fixed(nn.Module):
    """A 'potential' that returns given values, one per image, in order."""

    def __init__(self, values):
        super().__init__()
        self.values = torch.as_tensor(values, dtype=torch.float32)
        self.seen = 0

    def forward(self, images):
        out = self.values[self.seen : self.seen + len(images)]
        self.seen += len(images)
        return out


def test_weights_are_the_derivative_of_the_conjugate_at_minus_v():
    v = torch.tensor([-1.0, 0.0, 0.5, 2.0])
    torch.testing.assert_close(marginals.target_weights(v, "exp"), torch.exp(-v))
    torch.testing.assert_close(marginals.target_weights(v, "kl"), torch.exp(-v))
    torch.testing.assert_close(
        marginals.target_weights(v, "softplus"), torch.sigmoid(-v)
    )
    # balanced OT keeps the data as it is
    torch.testing.assert_close(marginals.target_weights(v, "linear"), torch.ones(4))
    with pytest.raises(ValueError, match="unknown Psi"):
        marginals.target_weights(v, "tsallis")


def test_potential_values_run_in_batches_and_keep_order():
    critic = Fixed(torch.arange(10.0))
    values = marginals.potential_values(critic, torch.zeros(10, 1, 28, 28), 3)
    torch.testing.assert_close(values, torch.arange(10.0))


def test_weighted_shares_follow_the_weights():
    groups = torch.tensor([0, 0, 1, 1])
    shares = marginals.weighted_shares(torch.tensor([1.0, 1.0, 1.0, 3.0]), groups, 2)
    assert shares.tolist() == pytest.approx([2 / 6, 4 / 6])
    with pytest.raises(ValueError, match="expected 0..1"):
        marginals.weighted_shares(torch.ones(4), torch.tensor([0, 1, 2, 0]), 2)
    with pytest.raises(ValueError, match="same shape"):
        marginals.weighted_shares(torch.ones(3), groups, 2)
    with pytest.raises(ValueError, match="keeps no mass"):
        marginals.weighted_shares(torch.zeros(4), groups, 2)


def test_a_gan_reads_its_logit_through_softplus():
    assert marginals.target_psi(TrainConfig(method="gan", psi2="exp")) == "softplus"
    assert marginals.target_psi(TrainConfig(method="uot", psi2="exp")) == "exp"


def test_missing_or_foreign_snapshots_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        marginals.load_potential(tmp_path / "potential_e3.pt")
    torch.save({"config": TrainConfig().to_dict(), "generators": {}}, tmp_path / "g.pt")
    with pytest.raises(ValueError, match="holds no potential"):
        marginals.load_potential(tmp_path / "g.pt")
    assert marginals.save_potential_snapshot(tmp_path) is None

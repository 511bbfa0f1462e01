import numpy as np
import torch

from hpcm_deploy.entropy import ggm


def test_y_table_shape_and_cdfs_are_valid():
    table = ggm.build_cdf_table(ggm.scale_table())
    assert table.cdf.shape == (60, 699)  # the official table's shape
    for row, n in zip(table.cdf, table.cdf_length):
        cdf = row[:n]
        assert cdf[0] == 0 and cdf[-1] == 1 << ggm.CDF_PRECISION
        assert (np.diff(cdf) > 0).all()  # every symbol, tail included, keeps a non-zero frequency
    assert (table.offset == -(table.cdf_length - 3) // 2).all()


def test_table_build_is_deterministic():
    s = torch.rand(32) * 4
    assert ggm.build_cdf_table(s).equals(ggm.build_cdf_table(s.clone()))
    assert not ggm.build_cdf_table(s).equals(ggm.build_cdf_table(s * 1.5))


def test_likelihood_is_a_distribution_over_integers():
    scales = torch.tensor([0.05, 0.3, 1.0, 7.0, 40.0])
    k = torch.arange(-400, 401, dtype=torch.float32)[:, None]
    total = ggm.likelihood(k, scales[None, :]).sum(0)
    assert torch.allclose(total, torch.ones(5), atol=1e-4)


def test_cdf_gradient_is_the_density():
    x = torch.linspace(-3, 3, 41, dtype=torch.float64, requires_grad=True)
    ggm.gennorm_cdf(x).sum().backward()
    h = 1e-6
    with torch.no_grad():
        numeric = (ggm.gennorm_cdf(x + h) - ggm.gennorm_cdf(x - h)) / (2 * h)
    assert torch.allclose(x.grad, numeric, atol=1e-6)


def test_scale_indexes_follow_compressai_rule():
    table = ggm.scale_table()
    edges = table[:-1]
    below = torch.nextafter(table, torch.zeros(1))
    scales = torch.cat([torch.rand(5000) * 70, table, below, torch.tensor([-1.0, 0.0])])
    expected = (scales[:, None] > edges[None, :]).sum(-1).numpy()
    assert np.array_equal(ggm.scale_indexes(scales.numpy(), edges.numpy()), expected)

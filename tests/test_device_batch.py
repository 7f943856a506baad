"""Sequential.to_device: a checked batch held in the model's device input buffers, stepped on without an upload."""
import numpy as np
import pytest

from clcnn import Dense, Flatten, Sequential
from clcnn.errors import ConfigError, ShapeError
from clcnn.optim import SGD
from clcnn.parallel import DataParallel
from conftest import lean_device_params, open_device
from test_step import batches, small_net


@pytest.fixture(params=lean_device_params())
def device_id(request):
    open_device(request.param)
    return request.param


def test_steps_on_a_device_batch_match_host_batch_steps(device_id):
    """Three recorded-and-replayed steps on the staged batch take the same weights and losses as three
    train_step(x, y) calls with the host batch (the same kernels, recorded on the same buffers)."""
    (x, y), = batches(1)
    results = []
    for staged in (False, True):
        model = small_net().to(device_id)
        opt = SGD(model, lr=0.1, momentum=0.9)
        batch = model.to_device(x, y) if staged else None
        assert batch is None or batch.shape == x.shape
        losses = [model.train_step(batch, None, opt) if staged else model.train_step(x, y, opt) for _ in range(3)]
        results.append((losses, model.state_dict()))
    (want_l, want_w), (got_l, got_w) = results
    np.testing.assert_array_equal(got_l, want_l)
    for k in want_w:
        np.testing.assert_array_equal(got_w[k], want_w[k], err_msg=k)
    assert want_l[2] != want_l[0]   # the steps did change the weights


def test_a_device_batch_is_refused_where_it_is_not_the_models_latest():
    (x, y), (x2, y2) = batches(2)
    model, other = small_net().to("cpu"), small_net().to("cpu")
    opt = SGD(model, lr=0.1)
    batch = model.to_device(x, y)
    cases = [(lambda: model.train_step(batch, y, opt), "holds its labels"),
             (lambda: other.train_step(batch, None, SGD(other, lr=0.1)), "another model"),
             (lambda: model.predict(batch), "only to train_step"),
             (lambda: model.gradients(batch, None), "only to train_step")]
    for call, needle in cases:
        with pytest.raises(ConfigError, match=needle):
            call()
    model.train_step(x2, y2, opt)   # a host batch overwrites the buffers: the old handle is stale
    with pytest.raises(ConfigError, match="overwritten"):
        model.train_step(batch, None, opt)
    group = DataParallel(small_net(), ["cpu"])
    with pytest.raises(ConfigError, match="only to train_step"):
        group.train_step(model.to_device(x, y), None, SGD(group, lr=0.1))


def test_to_device_checks_before_any_upload():
    model = Sequential([Flatten(), Dense(4, 3)], seed=0).to("cpu")
    x = np.zeros((2, 4), np.float32)
    with pytest.raises(ShapeError, match="labels must be in"):
        model.to_device(x, np.array([0, 3]))
    with pytest.raises(ShapeError, match="2 inputs but 3 labels"):
        model.to_device(x, np.array([0, 1, 2]))
    with pytest.raises(ShapeError):
        model.to_device(np.zeros((2, 5), np.float32), np.array([0, 1]))


def test_moving_the_model_or_missing_labels_or_an_empty_batch_are_refused():
    (x, y), = batches(1)
    model = small_net().to("cpu")
    batch = model.to_device(x, y)
    assert "shape=(5, 1, 8, 8)" in repr(batch)
    model.to("cpu")   # a move: new buffers, the handle's are detached
    with pytest.raises(ConfigError, match="moved"):
        model.train_step(batch, None, SGD(model, lr=0.1))
    with pytest.raises(ShapeError, match="needs its labels"):
        model.to_device(x, None)
    with pytest.raises(ShapeError, match="needs its labels"):
        model.train_step(x, None, SGD(model, lr=0.1))
    with pytest.raises(ShapeError, match="empty batch"):
        model.to_device(x[:0], y[:0])
    import copy
    with pytest.raises(ConfigError, match="cannot be copied"):
        copy.deepcopy(model.to_device(x, y))
    group = DataParallel(small_net(), ["cpu"])
    with pytest.raises(ConfigError, match="only to train_step"):
        group.gradients(group.lead.to_device(x, y), None)


def test_labels_of_another_shape_and_another_models_optimizer_are_refused():
    (x, y), = batches(1)
    model, other = small_net().to("cpu"), small_net().to("cpu")
    with pytest.raises(ShapeError, match=r"shape \(N,\), got shape \(1, 5\)"):
        model.to_device(x, y.reshape(1, -1))   # as many labels as inputs, but not one per input
    with pytest.raises(ShapeError, match=r"got shape \(\)"):
        model.train_step(x[:1], np.int64(y[0]), SGD(model, lr=0.1))
    before = model.state_dict()
    with pytest.raises(ConfigError, match="another model's parameters"):
        model.train_step(x, y, SGD(other, lr=0.1))
    with pytest.raises(ConfigError, match="needs a clcnn optimizer"):
        model.train_step(x, y, None)
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())   # nothing ran
    group = DataParallel(small_net(), ["cpu"])   # one device: the lead steps with the group's optimizer
    opt = SGD(group, lr=0.1)
    assert opt.updates(group) and opt.updates(group.lead) and not opt.updates(model)
    assert np.isfinite(group.train_step(x, y, opt))


def test_a_data_parallel_group_refuses_another_models_optimizer():
    (x, y), = batches(1)
    group, other = DataParallel(small_net(), ["cpu"]), small_net().to("cpu")
    with pytest.raises(ConfigError, match="another model's parameters"):
        group.train_step(x, y, SGD(other, lr=0.1))
    with pytest.raises(ConfigError, match="needs a clcnn optimizer"):
        group.train_step(x, y, None)

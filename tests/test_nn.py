"""fastgrad.nn against micrograd.nn: constructors, reprs, parameters, seeded
initialisation, forward values and gradients, zero_grad, width-1 layers."""
import random

import pytest

from fastgrad import Value
from fastgrad import nn

mgnn = pytest.importorskip("micrograd.nn")
mge = pytest.importorskip("micrograd.engine")

SHAPES = [(2, [16, 16, 1]), (3, [4, 4, 2]), (1, [1]), (5, [3]), (2, [8, 8, 8, 1])]


def both(factory, seed=1337):
    """The same model built by fastgrad and by micrograd from one seed."""
    random.seed(seed)
    fast = factory(nn)
    after_fast = random.random()
    random.seed(seed)
    slow = factory(mgnn)
    after_slow = random.random()
    # the same number of draws: the RNG ends in the same state
    assert after_fast == after_slow
    return fast, slow


@pytest.mark.parametrize("factory", [
    lambda m: m.Neuron(3),
    lambda m: m.Neuron(3, nonlin=False),
    lambda m: m.Neuron(1, False),
    lambda m: m.Layer(2, 3),
    lambda m: m.Layer(2, 1, nonlin=False),
    lambda m: m.MLP(2, [16, 16, 1]),
    lambda m: m.MLP(3, [4, 4, 2]),
    lambda m: m.MLP(1, [1]),
], ids=["neuron", "linear_neuron", "neuron_positional", "layer", "layer1",
        "mlp_demo", "mlp_342", "mlp_tiny"])
def test_repr_identical_to_micrograd(factory):
    fast, slow = both(factory)
    assert repr(fast) == repr(slow)
    assert str(fast) == str(slow)


def test_known_reprs():
    assert repr(nn.Neuron(2)) == "ReLUNeuron(2)"
    assert repr(nn.Neuron(2, nonlin=False)) == "LinearNeuron(2)"
    assert repr(nn.Layer(2, 2)) == "Layer of [ReLUNeuron(2), ReLUNeuron(2)]"
    assert repr(nn.MLP(1, [1, 1])) == ("MLP of [Layer of [ReLUNeuron(1)], "
                                       "Layer of [LinearNeuron(1)]]")


@pytest.mark.parametrize("nin, nouts", SHAPES)
@pytest.mark.parametrize("seed", [0, 1337])
def test_seeded_weights_identical_to_micrograd(nin, nouts, seed):
    fast, slow = both(lambda m: m.MLP(nin, nouts), seed)
    pf, ps = fast.parameters(), slow.parameters()
    assert len(pf) == len(ps)
    assert all(isinstance(p, Value) for p in pf)
    assert [p.data for p in pf] == [float(p.data) for p in ps]
    assert all(type(p.data) is float and p.grad == 0.0 for p in pf)


def test_parameter_count_of_the_demo_model():
    model = nn.MLP(2, [16, 16, 1])
    # (2*16 + 16) + (16*16 + 16) + (16 + 1)
    assert len(model.parameters()) == 337
    assert len(nn.Layer(3, 4).parameters()) == 16
    assert len(nn.Neuron(7).parameters()) == 8
    assert nn.Module().parameters() == []


def test_structure_attributes():
    random.seed(5)
    n = nn.Neuron(3, nonlin=False)
    assert len(n.w) == 3 and isinstance(n.b, Value) and n.b.data == 0.0
    assert n.nonlin is False
    assert n.parameters() == n.w + [n.b]
    layer = nn.Layer(3, 2)
    assert len(layer.neurons) == 2 and all(ne.nonlin for ne in layer.neurons)
    model = nn.MLP(3, [4, 2])
    assert [len(la.neurons) for la in model.layers] == [4, 2]
    assert [la.neurons[0].nonlin for la in model.layers] == [True, False]
    assert all(isinstance(m, nn.Module) for m in (n, layer, model))


@pytest.mark.parametrize("nin, nouts", SHAPES)
def test_forward_and_gradients_match_micrograd(nin, nouts):
    fast, slow = both(lambda m: m.MLP(nin, nouts), seed=42)
    rng = random.Random(9)
    xs = [[rng.uniform(-2, 2) for _ in range(nin)] for _ in range(4)]
    for x in xs:
        of, os_ = fast(x), slow(x)
        of = of if isinstance(of, list) else [of]
        os_ = os_ if isinstance(os_, list) else [os_]
        # forward: the same operations in the same order, bit for bit
        assert [o.data for o in of] == [float(o.data) for o in os_]
        # a scalar loss through every output
        lf = sum((o * o for o in of), Value(0.0))
        ls = sum((o * o for o in os_), mge.Value(0.0))
        lf.backward()
        ls.backward()
    # gradients summed in a possibly different order: equal to rounding
    for pf, ps in zip(fast.parameters(), slow.parameters()):
        assert pf.grad == pytest.approx(ps.grad, rel=1e-12, abs=1e-15)


def test_value_inputs_give_the_same_forward():
    random.seed(3)
    model = nn.MLP(2, [4, 1])
    x = [0.5, -1.25]
    vx = [Value(v) for v in x]
    assert model(x).data == model(vx).data
    out = model(vx)
    out.backward()
    assert any(v.grad != 0.0 for v in vx)        # inputs are part of the graph


def test_zero_grad():
    random.seed(11)
    model = nn.MLP(2, [4, 4, 1])
    for x in ([1.0, 2.0], [-0.5, 0.3]):
        model(x).backward()
    assert any(p.grad != 0.0 for p in model.parameters())
    model.zero_grad()
    assert all(p.grad == 0.0 and type(p.grad) is float for p in model.parameters())
    # on smaller modules too
    n = nn.Neuron(2)
    n([1.0, 1.0]).backward()
    n.zero_grad()
    assert [p.grad for p in n.parameters()] == [0.0, 0.0, 0.0]
    layer = nn.Layer(2, 2)
    sum(layer([1.0, 1.0])).backward()
    layer.zero_grad()
    assert all(p.grad == 0.0 for p in layer.parameters())


def test_one_neuron_layer_returns_a_bare_value():
    layer = nn.Layer(3, 1)
    out = layer([1.0, 2.0, 3.0])
    assert isinstance(out, Value)
    outs = nn.Layer(3, 2)([1.0, 2.0, 3.0])
    assert isinstance(outs, list) and len(outs) == 2
    # as micrograd
    assert isinstance(mgnn.Layer(3, 1)([1.0, 2.0, 3.0]), mge.Value)


def test_width_one_hidden_layer_works():
    # micrograd fails here: the bare Value of the middle layer is not iterable
    random.seed(2)
    with pytest.raises(TypeError):
        mgnn.MLP(2, [16, 1, 1])([0.5, -0.5])
    random.seed(2)
    model = nn.MLP(2, [16, 1, 1])
    x = [0.5, -0.5]
    out = model(x)
    assert isinstance(out, Value)
    # oracle: the same forward pass on plain floats
    l1, l2, l3 = model.layers
    h = [max(0.0, sum((w.data * xi for w, xi in zip(n.w, x)), n.b.data))
         for n in l1.neurons]
    (n2,) = l2.neurons
    h2 = max(0.0, sum((w.data * hi for w, hi in zip(n2.w, h)), n2.b.data))
    (n3,) = l3.neurons
    want = n3.b.data + n3.w[0].data * h2
    assert out.data == pytest.approx(want, rel=1e-14, abs=1e-300)
    out.backward()
    assert n3.w[0].grad == pytest.approx(h2, rel=1e-14, abs=1e-300)
    assert n3.b.grad == 1.0


def test_neuron_output_is_relu_of_affine():
    random.seed(4)
    n = nn.Neuron(3)
    x = [1.0, -2.0, 0.5]
    want = sum((w.data * xi for w, xi in zip(n.w, x)), n.b.data)
    assert n(x).data == max(0.0, want)
    lin = nn.Neuron(3, nonlin=False)
    want = sum((w.data * xi for w, xi in zip(lin.w, x)), lin.b.data)
    assert lin(x).data == want
    out = lin(x)
    out.backward()
    assert [w.grad for w in lin.w] == x and lin.b.grad == 1.0

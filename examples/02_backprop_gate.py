"""Backpropagation through gates (lecture 3, "Backpropagation").

f(x, y, z, w) = 2 * (x*y + max(z, w)) at [x, y, z, w] = [3, -4, 2, -1]:
a * gate p = x*y, a max gate q = max(z, w), a + gate v = p + q and f = 2v.
The chain rule, by hand, gives grad f = [-8, 6, 2, 0]; fastgrad's backward()
gets the same numbers by walking the graph in reverse.

Run: python examples/02_backprop_gate.py          (add --dot to print the graph
     in Graphviz's DOT language, e.g. ... --dot | dot -Tsvg > gate.svg)
"""
import sys

from fastgrad import Value, maximum, to_dot

# --- by hand, as on the slide ----------------------------------------------
x, y, z, w = 3.0, -4.0, 2.0, -1.0
p = x * y            # -12
q = max(z, w)        # 2
v = p + q            # -10
f = 2 * v            # -20
print(f"forward:  p = {p}, q = {q}, v = {v}, f = {f}")

dfdv = 2.0                           # f = 2v
dvdp, dvdq = 1.0, 1.0                # + gate passes the gradient through
dpdx, dpdy = y, x                    # * gate swaps its inputs
dqdz, dqdw = float(z > w), float(w > z)  # max gate routes it to the larger input
by_hand = [dfdv * dvdp * dpdx, dfdv * dvdp * dpdy,
           dfdv * dvdq * dqdz, dfdv * dvdq * dqdw]
print(f"backward by hand (chain rule): [df/dx, df/dy, df/dz, df/dw] = {by_hand}")

# --- with fastgrad: build the same expression from Values ------------------
xv, yv, zv, wv = (Value(a, label=n) for a, n in zip([x, y, z, w], "xyzw"))
pv = xv * yv
pv.label = "p"
qv = maximum(zv, wv)          # the lecture's max gate
qv.label = "q"
vv = pv + qv
vv.label = "v"
fv = 2 * vv
fv.label = "f"
fv.backward()                 # sets f.grad = 1, then applies the chain rule
print(f"forward by fastgrad: f = {fv.data}")
print(f"backward by fastgrad:          [df/dx, df/dy, df/dz, df/dw] = "
      f"{[xv.grad, yv.grad, zv.grad, wv.grad]}")

if "--dot" in sys.argv[1:]:
    print(to_dot(fv))

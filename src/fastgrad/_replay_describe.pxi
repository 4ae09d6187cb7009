# Read-only: a recorded Program as plain Python data (``Program.graph()``),
# what fastgrad.export turns into a torch Module or an ONNX model.
# (included by _replay.pyx; see the stage list in its docstring)
#
# It reads the tapes the replay runs -- the training tape after the layer pass
# (dense layers as one instruction each) and the scalar tape after the
# scalar-chain pass (an L2 penalty as one "dot") -- so a layer the recorder
# finds is a layer in the description.  The description's format is what
# fastgrad.export and users rely on: when an encoding below changes (layer
# metadata, new op codes), this file changes with it, and
# tests/test_export_graph.py says so if it does not.

# op codes past N_PURE_OPS that the tapes carry (see _replay.pyx)
_TAPE_OP_NAMES = {OP_FMULADD: "fmuladd", OP_SDOT: "dot", OP_LAYER: "layer"}

#: number of op codes with derivative rules (tests check that each has a name)
_N_PURE_OPS = N_PURE_OPS
#: op codes end here; the issue-20 ops (log1p ... logsumexp) follow OP_CUSTOM
_N_OPS = N_OPS


cdef str _op_name(int op):
    name = _OP_NAMES.get(op)
    if name is None:
        name = _TAPE_OP_NAMES.get(op)
    if name is None:
        raise RuntimeError(f"Program.graph: op code {op} has no name in "
                           "fastgrad._replay._OP_NAMES (a new op must be named "
                           "there and mapped in fastgrad.export)")
    return name


cdef tuple _sref(Program p, int slot):
    """A scalar slot as (kind, index): a parameter, a baked constant, or a
    scalar instruction's result (indexed by its slot)."""
    if slot < p.n_params:
        return ("param", slot)
    if slot < p.n_params + p.n_const:
        return ("const", slot - p.n_params)
    return ("scalar", slot)


cdef tuple _bref(Program p, int row):
    """A batched row as (kind, index): an input column or a result row."""
    if row < p.n_inputs:
        return ("input", row)
    return ("row", row)


cdef object _start(Program p, const int* m, int h):
    """Where row h's sum starts: a slot, a constant, or None (-0.0: at its
    first product, -0.0 + p0 being p0 exactly)."""
    cdef int sl = p.l_slots[m[LM_B] + h]
    cdef double c
    if sl >= 0:
        return _sref(p, sl)
    c = p.l_init[m[LM_INIT] + h]
    if c == 0.0 and copysign(1.0, c) < 0:
        return None
    return ("value", float(c))


cdef dict _layer_dict(Program p, int li):
    cdef const int* m = &p.l_meta[li * LM_SIZE]
    cdef int H = m[LM_H], K = m[LM_K], h, k, q, op
    weights = [[_sref(p, p.l_slots[m[LM_W] + h * K + k]) for k in range(K)]
               for h in range(H)]
    end = None
    if m[LM_BL] >= 0:
        end = [_sref(p, p.l_slots[m[LM_BL] + h]) if p.l_slots[m[LM_BL] + h] >= 0
               else None for h in range(H)]
    epilogue = []
    for q in range(m[LM_NEP]):
        op = p.l_ep[m[LM_EP] + q]
        epilogue.append((_op_name(op),
                         float(p.l_epc[m[LM_EP] + q]) if op_has_const(op) else None))
    return {
        "inputs": [_bref(p, p.l_rows[m[LM_X] + k]) for k in range(K)],
        "outputs": [_bref(p, p.l_rows[m[LM_O] + h]) for h in range(H)],
        "weights": weights,
        # z_h = ((start_h + w_h0*x_0) + w_h1*x_1) + ... [+ end_h], then the
        # epilogue's ops in order
        "start": [_start(p, m, h) for h in range(H)],
        "end": end,
        "epilogue": epilogue,
    }


cdef dict _program_graph(Program p):
    cdef int k, op, kind, q
    cdef list scalar = [], batched = [], layers = [], terms
    cdef const int* t
    for li in range(p.nlayers):
        layers.append(_layer_dict(p, li))
    for k in range(p.n_sinstr):
        op = p.s_op[k]
        if op_is_nary(op):
            # an n-ary op (sum, logsumexp): its operands in order
            t = &p.s_nx[p.s_a[k]]
            scalar.append({"op": _op_name(op), "out": _sref(p, p.s_out[k]),
                           "args": [_sref(p, t[1 + q]) for q in range(t[0])],
                           "const": None})
            continue
        if op == OP_SDOT:
            # ((acc + a0*b0) + a1*b1) + ..., in this order
            t = &p.sd[p.s_b[k]]
            terms = [(_sref(p, t[1 + 2 * q]), _sref(p, t[2 + 2 * q]))
                     for q in range(t[0])]
            scalar.append({"op": "dot", "out": _sref(p, p.s_out[k]),
                           "args": [_sref(p, p.s_a[k])], "terms": terms,
                           "const": None})
            continue
        args = [_sref(p, p.s_a[k])]
        if op_is_binary(op):
            args.append(_sref(p, p.s_b[k]))
        scalar.append({"op": _op_name(op), "out": _sref(p, p.s_out[k]),
                       "args": args,
                       "const": float(p.s_c[k]) if op_has_const(op) else None})
    for k in range(p.n_binstr):
        op = p.b_op[k]
        kind = p.b_kind[k]
        if op == OP_LAYER:
            lay = layers[p.b_a[k]]
            batched.append({"op": "layer", "layer": p.b_a[k],
                            "out": list(lay["outputs"]),
                            "args": list(lay["inputs"]), "const": None})
            continue
        if kind == K_N:
            # an n-ary op: its operands in order (rows, or scalar slots as
            # -1 - slot in b_nx)
            t = &p.b_nx[p.b_b[k]]
            args = [_bref(p, t[1 + q]) if t[1 + q] >= 0 else _sref(p, -1 - t[1 + q])
                    for q in range(t[0])]
            batched.append({"op": _op_name(op), "out": _bref(p, p.b_out[k]),
                            "args": args, "const": None})
            continue
        a = _sref(p, p.b_a[k]) if kind == K_SB else _bref(p, p.b_a[k])
        if op == OP_FMULADD:
            # acc + s * x: the product rounded, then the sum
            args = [a, _sref(p, p.b_s[k]), _bref(p, p.b_b[k])]
        elif kind == K_B:
            args = [a]
        elif kind == K_BS:
            args = [a, _sref(p, p.b_b[k])]
        else:
            args = [a, _bref(p, p.b_b[k])]
        batched.append({"op": _op_name(op), "out": _bref(p, p.b_out[k]),
                        "args": args,
                        "const": float(p.b_c[k]) if op_has_const(op) else None})
    outputs = [_bref(p, p.o_slot[q]) if p.o_bat[q] else _sref(p, p.o_slot[q])
               for q in range(p.n_outputs)]
    return {
        "n_inputs": p.n_inputs,
        "n_outputs": p.n_outputs,
        "n_params": p.n_params,
        "params": p._params,
        "constants": [float(p.consts[k]) for k in range(p.n_const)],
        "scalar": scalar,
        "batched": batched,
        "layers": layers,
        "outputs": outputs,
        "penalty": _sref(p, p.pen_slot) if p.pen_slot >= 0 else None,
    }

# Stage 1: recording a graph of Values into flat tapes.
# (included by _replay.pyx; see the stage list in its docstring)

# ---------------------------------------------------------------------------
# recording
# ---------------------------------------------------------------------------

# The only two places that read a node's second operand / constant.
cdef inline PyObject* _operand_b(Value v) noexcept:
    return node_b(v)


cdef inline double _const_c(Value v) noexcept:
    return node_c(v)


def _describe(Value v):
    return f"Value(data={v.data!r})"


def build(outputs, inputs, params, penalty=None):
    """Record the graph under ``outputs`` (and ``penalty``) into a Program.

    Private: see fastgrad.compiled.compile_graph for the documented API.
    """
    cdef list outs = list(outputs), ins = list(inputs), pars = list(params)
    cdef dict in_idx = {}, par_idx = {}, slot = {}
    cdef list roots
    cdef list consts = []
    cdef list s_op = [], s_out = [], s_a = [], s_b = [], s_c = []
    cdef list b_op = [], b_kind = [], b_out = [], b_a = [], b_b = [], b_c = []
    cdef PyObject** order = NULL
    cdef Py_ssize_t n, i
    cdef Value v
    cdef size_t key
    cdef int op, nb_ops = 0, ns_ops = 0, n_in, n_par
    cdef object sa, sb
    cdef bint bat_a, bat_b
    cdef Program prog
    cdef int n_const

    if not outs:
        raise ValueError("compile: at least one output Value is required, got 0")
    for where, seq in (("output", outs), ("input", ins), ("parameter", pars)):
        for i in range(len(seq)):
            if not isinstance(seq[i], Value):
                raise TypeError(f"compile: {where} {i} must be a fastgrad Value, "
                                f"got {type(seq[i]).__name__}")
    if penalty is not None and not isinstance(penalty, Value):
        raise TypeError("compile: penalty must be a fastgrad Value (a function "
                        f"of the parameters only), got {type(penalty).__name__}")
    for i in range(len(ins)):
        v = <Value>ins[i]
        if v._opcode != OP_LEAF:
            raise ValueError(f"compile: input {i} ({_describe(v)}) is not a leaf "
                             "Value; inputs must be leaves (Value(x))")
        key = <size_t><PyObject*>v
        if key in in_idx:
            raise ValueError(f"compile: input {i} is the same Value as input "
                             f"{in_idx[key]}; each input must be a distinct Value")
        in_idx[key] = i
    for i in range(len(pars)):
        v = <Value>pars[i]
        if v._opcode != OP_LEAF:
            raise ValueError(f"compile: parameter {i} ({_describe(v)}) is not a "
                             "leaf Value; parameters must be leaves")
        key = <size_t><PyObject*>v
        if key in in_idx:
            raise ValueError(f"compile: parameter {i} is also input "
                             f"{in_idx[key]}; a Value is either an input or a "
                             "parameter")
        if key in par_idx:
            raise ValueError(f"compile: parameter {i} is the same Value as "
                             f"parameter {par_idx[key]}; list each parameter once")
        par_idx[key] = i
    n_in = len(ins)
    n_par = len(pars)
    # slot of a node: (is_batched, index).  Inputs are batched rows 0..n_in-1,
    # parameters scalar slots 0..n_par-1, constants follow the parameters;
    # instruction results are numbered after those (fixed up below).
    roots = outs + ([penalty] if penalty is not None else [])
    for r in roots:
        n = topo_order(<Value>r, &order)
        try:
            for i in range(n):
                key = <size_t>order[i]
                if key in slot:
                    continue
                v = <Value>order[i]
                op = v._opcode
                if op == OP_CUSTOM:
                    raise ValueError(
                        "compile: the graph contains a hand-built node "
                        f"({_describe(v)}, op {v._op!r}) whose gradient is a "
                        "user _backward callable; such nodes cannot be "
                        "compiled (build it from Value operators instead)")
                if (op != OP_LEAF and v._dict != NULL
                        and '_backward' in <dict><object>v._dict):
                    raise ValueError(
                        f"compile: the {v._op!r} node {_describe(v)} has a "
                        "user _backward replacing its derivative rule; a "
                        "compiled program would ignore it, so it is refused")
                if op == OP_LEAF:
                    if key in in_idx:
                        slot[key] = (True, in_idx[key])
                    elif key in par_idx:
                        slot[key] = (False, par_idx[key])
                    else:
                        slot[key] = (False, n_par + len(consts))
                        consts.append(v.data)
                    continue
                sa = slot[<size_t>v._a]
                bat_a = sa[0]
                if _operand_b(v) != NULL:
                    sb = slot[<size_t>_operand_b(v)]
                    bat_b = sb[0]
                else:
                    sb = None
                    bat_b = False
                if bat_a or bat_b:
                    b_op.append(op)
                    b_out.append(nb_ops)        # offset by n_in below
                    b_c.append(_const_c(v))
                    b_a.append(sa[1])
                    b_b.append(-1 if sb is None else sb[1])
                    if sb is None:
                        b_kind.append(K_B)
                    elif bat_a and bat_b:
                        b_kind.append(K_BB)
                    elif bat_a:
                        b_kind.append(K_BS)
                    else:
                        b_kind.append(K_SB)
                    slot[key] = (True, n_in + nb_ops)
                    nb_ops += 1
                else:
                    s_op.append(op)
                    s_out.append(ns_ops)        # offset below
                    s_c.append(_const_c(v))
                    s_a.append(sa[1])
                    s_b.append(-1 if sb is None else sb[1])
                    slot[key] = (False, -1 - ns_ops)   # placeholder, fixed below
                    ns_ops += 1
        finally:
            free(order)
            order = NULL
    missing = [i for i in range(n_in) if <size_t><PyObject*>ins[i] not in slot]
    if missing:
        raise ValueError(f"compile: input(s) {missing} are not in the graph of "
                         "the outputs: every input must be used")
    missing = [i for i in range(n_par) if <size_t><PyObject*>pars[i] not in slot]
    if missing:
        raise ValueError(f"compile: parameter(s) {missing} (of {n_par}) are not "
                         "in the graph of the outputs or the penalty")
    # scalar instruction results go after parameters and constants; scalar
    # operand indices recorded as -1-k (results) are remapped now
    n_const = len(consts)
    base = n_par + n_const

    def fix(int s):
        return s if s >= 0 else base + (-1 - s)

    s_out = [base + k for k in s_out]
    s_a = [fix(x) for x in s_a]
    # s_b uses -1 for "none"; a real reference to scalar result 0 is also -1:
    # disambiguate by the op's arity
    s_b = [fix(s_b[k]) if op_is_binary(s_op[k]) else -1 for k in range(ns_ops)]
    for k in range(nb_ops):
        if b_kind[k] == K_SB:
            b_a[k] = fix(b_a[k])
        if b_kind[k] == K_BS:
            b_b[k] = fix(b_b[k])
    b_out = [n_in + k for k in b_out]
    b_s = [-1] * nb_ops
    o_rows = set()
    for r in outs:
        sa = slot[<size_t><PyObject*>r]
        if sa[0]:
            o_rows.add(sa[1])
    if FUSE:
        nb_ops = _fuse(b_op, b_kind, b_out, b_a, b_b, b_s, b_c, n_in, o_rows, slot)

    prog = Program.__new__(Program, _TOKEN)
    prog.n_inputs = n_in
    prog.n_outputs = len(outs)
    prog.n_params = n_par
    prog.n_const = n_const
    prog.n_scalar = base + ns_ops
    prog.n_batched = n_in + nb_ops
    prog.n_sinstr = ns_ops
    prog.n_binstr = nb_ops
    prog._params = tuple(pars)
    prog.consts = np.array(consts + [0.0], np.float64)
    o_slot = []
    o_bat = []
    for r in outs:
        sa = slot[<size_t><PyObject*>r]
        o_bat.append(1 if sa[0] else 0)
        o_slot.append(sa[1] if sa[0] else fix(sa[1]))
    _forward_tape(prog, b_op, b_kind, b_out, b_a, b_b, b_s, b_c, o_slot, o_bat)
    prog._recorded = {
        "op": np.array(b_op, np.uint8), "kind": np.array(b_kind, np.uint8),
        "out": np.array(b_out, np.int32), "a": np.array(b_a, np.int32),
        "b": np.array(b_b, np.int32), "s": np.array(b_s, np.int32),
        "c": np.array(b_c, np.float64)}
    prog.n_recorded = nb_ops
    prog.n_srecorded = ns_ops
    recorded_kind, recorded_a = list(b_kind), list(b_a)
    recorded_b, recorded_s = list(b_b), list(b_s)
    sd = []
    prog.nlayers = 0
    found = None
    prog._found = {"chains": 0, "in_layers": 0, "repeating": 0}
    prog._recognised = LAYERS and FUSE
    if LAYERS and FUSE:
        found = _find_layers(prog, b_op, b_kind, b_out, b_a, b_b, b_s, b_c,
                             n_in, {o_slot[q] for q in range(len(o_slot))
                                    if o_bat[q]})
    if found is not None:
        new_row, prog.n_batched = found
        nb_ops = len(b_op)
        prog.n_binstr = nb_ops
        o_slot = [new_row[o_slot[q]] if o_bat[q] else o_slot[q]
                  for q in range(len(o_slot))]
    else:
        prog.l_meta = np.zeros(1, np.int32)
        prog.l_rows = np.zeros(1, np.int32)
        prog.l_slots = np.zeros(1, np.int32)
        prog.l_ep = np.zeros(1, np.int32)
        prog.l_pw = prog.l_lanes = prog.l_sums = np.zeros(1, np.float64)
        prog.l_init = prog.l_epc = np.zeros(1, np.float64)
    prog.b_op = np.array(b_op + [0], np.uint8)
    prog.b_kind = np.array(b_kind + [0], np.uint8)
    prog.b_out = np.array(b_out + [0], np.int32)
    prog.b_a = np.array(b_a + [0], np.int32)
    prog.b_b = np.array(b_b + [0], np.int32)
    prog.b_s = np.array(b_s + [0], np.int32)
    prog.b_c = np.array(b_c + [0.0], np.float64)
    prog.o_slot = np.array(o_slot, np.int32)
    prog.o_bat = np.array(o_bat, np.uint8)
    prog.pen_slot = -1
    if penalty is not None:
        sa = slot[<size_t><PyObject*>penalty]
        if sa[0]:
            raise ValueError("compile: the penalty depends on an input; it must "
                             "be a function of the parameters (and constants) only")
        prog.pen_slot = fix(sa[1])
    # scalar reads from outside the scalar tape: the batched tape (before
    # the layer pass, which reads the same slots), scalar outputs, penalty
    external = {prog.pen_slot}
    for k in range(len(recorded_kind)):
        if recorded_kind[k] == K_SB:
            external.add(recorded_a[k])
        elif recorded_kind[k] == K_BS:
            external.add(recorded_b[k])
        if recorded_s[k] >= 0:
            external.add(recorded_s[k])
    for q in range(len(o_slot)):
        if not o_bat[q]:
            external.add(o_slot[q])
    prog._srecorded = {
        "op": np.array(s_op, np.uint8), "out": np.array(s_out, np.int32),
        "a": np.array(s_a, np.int32), "b": np.array(s_b, np.int32),
        "c": np.array(s_c, np.float64)}
    if FUSE:
        _scalar_dots(s_op, s_out, s_a, s_b, s_c, external, sd)
    prog.n_sinstr = len(s_op)
    prog.s_op = np.array(s_op + [0], np.uint8)
    prog.s_out = np.array(s_out + [0], np.int32)
    prog.s_a = np.array(s_a + [0], np.int32)
    prog.s_b = np.array(s_b + [0], np.int32)
    prog.s_c = np.array(s_c + [0.0], np.float64)
    prog.sd = np.array(sd + [0], np.int32)
    prog.vs = np.zeros(prog.n_scalar + 1, np.float64)
    prog.gs = np.zeros(prog.n_scalar + 1, np.float64)
    prog.vs1 = np.zeros(prog.n_scalar + 1, np.float64)
    prog.vb1 = np.zeros(prog.n_batched + 1, np.float64)
    for k in range(n_const):
        prog.vs[n_par + k] = consts[k]
        prog.vs1[n_par + k] = consts[k]
    prog.ld = 0
    prog.cap_cols = 0
    prog.cap_rows_g = 0
    prog._plans = [None] * 4      # by 2 * want_inputs + with_pen
    prog._busy = False
    prog.theta_in = NULL
    prog.c_load_params()
    return prog

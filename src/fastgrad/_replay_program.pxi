# Stage 4: the Python-facing Program (and its finite-difference evaluators).
# (included by _replay.pyx; see the stage list in its docstring)

# ---------------------------------------------------------------------------
# num_grad / gradcheck of a Program (the protocol of fastgrad._numgrad)
# ---------------------------------------------------------------------------

cdef object _fd_vector(x, Py_ssize_t n, str what):
    if (not isinstance(x, np.ndarray) or x.dtype != np.float64 or x.ndim != 1
            or not x.flags.c_contiguous):
        raise TypeError(f"num_grad: a compiled Program is differentiated with "
                        f"respect to a 1-d C-contiguous float64 array of its {what}, "
                        f"got {type(x).__name__} {getattr(x, 'dtype', '')} "
                        f"{getattr(x, 'shape', '')}")
    if x.shape[0] != n:
        raise ValueError(f"num_grad: expected {what} of shape ({n},), got {x.shape}")
    return x


cdef tuple _init_scratch(Evaluator ev, Program p):
    """Private value buffers for one evaluator: finite differences of one
    Program in several threads never share scratch space (the Program's own
    buffers belong to its methods, guarded by the busy flag)."""
    cdef Py_ssize_t i
    cdef double[::1] vs = np.array(p.vs1, dtype=np.float64)   # holds the constants
    for i in range(p.n_params):
        vs[i] = (<Value>p._params[i]).data
    # work of one evaluation (the signal checks' count): a layer is H * K
    # multiply-adds (it used to count as one operation: Ctrl-C went unseen
    # for seconds in wide layers)
    cdef Py_ssize_t work = p.n_sinstr + p.n_inputs + 1
    cdef int k
    for k in range(p.n_binstr):
        if p.b_op[k] == OP_LAYER:
            work += <Py_ssize_t>p.l_meta[p.b_a[k] * LM_SIZE + LM_H] * \
                (p.l_meta[p.b_a[k] * LM_SIZE + LM_K] + p.l_meta[p.b_a[k] * LM_SIZE + LM_NEP])
        elif p.b_kind[k] == K_N:
            work += p.b_nx[p.b_b[k]]
        else:
            work += 1
    ev.work = work
    return vs, np.zeros(p.n_batched + 1, np.float64)


@cython.final
cdef class _FDInputs(Evaluator):
    """Output 0 as a function of the input vector (parameters fixed)."""
    cdef Program prog
    cdef const double[::1] x
    cdef double[::1] vs, vb            # private scratch (see _init_scratch)

    def __cinit__(self, token=None):
        if token is not _TOKEN:
            raise TypeError("_FDInputs objects are made by Program._fd_evaluator")

    cdef double evaluate(self) noexcept nogil:
        return self.prog.c_eval_in(NULL, &self.x[0] if self.x.shape[0] > 0 else NULL,
                                   &self.vs[0], &self.vb[0])

    cdef int gradient(self, double[::1] out) except -1:
        # value_and_grad's replay without storing anything in the parameters
        cdef Program p = self.prog
        gin = np.zeros((1, p.n_inputs), np.float64)
        mats = p._vector(np.asarray(self.x), "gradcheck")
        p._enter("gradcheck")
        try:
            p._run(mats, 1, 0, True, True, False, None,
                   gin if p.n_inputs > 0 else None)
        finally:
            p._busy = False
        np.asarray(out)[:] = gin[0]
        return 0


@cython.final
cdef class _FDParams(Evaluator):
    """Output 0 as a function of the parameter vector (input fixed)."""
    cdef Program prog
    cdef const double[::1] theta
    cdef double[::1] x
    cdef double[::1] vs, vb            # private scratch (see _init_scratch)

    def __cinit__(self, token=None):
        if token is not _TOKEN:
            raise TypeError("_FDParams objects are made by Program.wrt_params")

    cdef double evaluate(self) noexcept nogil:
        return self.prog.c_eval_in(
            &self.theta[0] if self.theta.shape[0] > 0 else NULL, &self.x[0],
            &self.vs[0], &self.vb[0])

    cdef int gradient(self, double[::1] out) except -1:
        # value_and_grad's replay at parameters theta, without touching the
        # parameters' .data/.grad (another thread may be reading them)
        cdef Program p = self.prog
        cdef Py_ssize_t i
        mats = p._vector(np.asarray(self.x)[:p.n_inputs], "gradcheck")
        p._enter("gradcheck")
        try:
            if p.n_params > 0:
                p.theta_in = &self.theta[0]
            p._run(mats, 1, 0, True, False, False, None, None)
            for i in range(p.n_params):
                out[i] = p.gs[i]
        finally:
            p.theta_in = NULL
            p._busy = False
        return 0


@cython.final
cdef class _WrtParams:
    """``num_grad``/``gradcheck`` target: a Program's output 0 as a function of
    its parameter vector at a fixed input (see Program.wrt_params).

    ``program`` and ``x`` are read-only, and ``x`` is a private read-only
    copy: the evaluator handed to the finite-difference loop always reads
    exactly ``program.n_inputs`` values (a replaced ``x`` of another length
    used to make the C loop read past its end).
    """
    cdef readonly Program program
    cdef readonly object x

    def __cinit__(self, token=None, Program prog=None, x=None):
        if token is not _TOKEN or prog is None:
            raise TypeError("_WrtParams objects are made by Program.wrt_params")
        x = np.array(x, dtype=np.float64).reshape(-1)
        if x.shape[0] != prog.n_inputs:
            raise ValueError(f"wrt_params: expected {prog.n_inputs} inputs, got "
                             f"{x.shape[0]}")
        x.flags.writeable = False
        self.program = prog
        self.x = x

    def __reduce__(self):
        raise TypeError("a compiled Program (and its wrt_params view) cannot be "
                        "pickled; compile it again")

    def _fd_evaluator(self, theta):
        cdef Program p = self.program
        cdef _FDParams ev = _FDParams.__new__(_FDParams, _TOKEN)
        ev.theta = _fd_vector(theta, p.n_params, "parameters")
        ev.x = np.append(self.x, 0.0)     # never empty (a pointer to pass)
        ev.prog = p
        ev.vs, ev.vb = _init_scratch(ev, p)
        return ev

    def __call__(self, theta):
        return self.program.eval_params(theta, self.x)


# ---------------------------------------------------------------------------
# input conversion
# ---------------------------------------------------------------------------

cdef object _real_vector(v, str what):
    """eval_params' arguments: real numbers (a complex array used to be cast
    with only a ComplexWarning), flattened to float64."""
    arr = np.asarray(v)
    if arr.dtype.kind not in "fiu" or arr.dtype.kind == "f" and arr.dtype.itemsize > 8:
        raise TypeError(f"eval_params: {what} must be real numbers, got dtype "
                        f"{arr.dtype}")
    return np.ascontiguousarray(arr, np.float64).reshape(-1)


cdef double _learning_rate(lr, str where) except -1.0:
    """lr as a double: a real number, finite and >= 0 (as optim.SGD)."""
    cdef double step
    if type(lr) is not float and (isinstance(lr, (bool, np.bool_))
                                  or not isinstance(lr, numbers.Real)):
        raise TypeError(f"{where}: lr must be a real number, got "
                        f"{type(lr).__name__} {lr!r:.40}")
    step = float(lr)
    if not isfinite(step) or step < 0.0:
        raise ValueError(f"{where}: invalid lr {lr!r} (must be finite and >= 0)")
    return step


def _num_threads(num_threads, where="num_threads"):
    """``num_threads`` checked and resolved (None: every CPU); for callers
    that want the error before a long compile."""
    return _threads(num_threads, where)


cdef int _threads(num_threads, str where) except -1:
    """num_threads as a count >= 1: an int, or None for every CPU this
    process may run on."""
    cdef Py_ssize_t n
    if num_threads is None:
        try:
            n = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            n = os.cpu_count() or 1
        return <int>max(1, min(n, MAX_THREADS))
    # (an int: no ABC check, ~4k instructions; a compile makes two calls)
    if type(num_threads) is not int and (isinstance(num_threads, (bool, np.bool_))
                                         or not isinstance(num_threads, numbers.Integral)):
        raise TypeError(f"{where}: num_threads must be an int or None, got "
                        f"{type(num_threads).__name__}")
    n = num_threads
    if n < 1:
        raise ValueError(f"{where}: num_threads must be >= 1 (or None for all "
                         f"CPUs), got {n}")
    return <int>min(n, MAX_THREADS)


def _as_matrix(x, str where):
    """x as a 2-D C-contiguous float64 array (a copy only when needed)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu" or arr.dtype.kind == "f" and arr.dtype.itemsize > 8:
        raise TypeError(f"{where}: inputs must be a real (float or int) array, "
                        f"got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    elif arr.ndim != 2:
        raise ValueError(f"{where}: expected a 2-D array of shape (batch, "
                         f"n_inputs) (or 1-D columns), got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def _unshare(list mats, tuple outs, str where):
    """The input matrices, with a copy of any that may share memory with an
    array the replay writes (``outs``; None entries skipped).

    As NumPy's ufuncs do: the result is as if the input had been read in
    full before any output was written (``predict(X[:-1], out=X[1:])``
    otherwise reads rows it has already overwritten, chunk by chunk).
    ``np.may_share_memory`` compares the arrays' bounds only (O(1)); a false
    positive costs a copy of that input, never a wrong result.  Two written
    arrays that overlap each other are refused: no order of writes is right.
    """
    cdef list written = [o for o in outs if o is not None]
    cdef Py_ssize_t i, j
    for i in range(len(written)):
        for j in range(i + 1, len(written)):
            if np.may_share_memory(written[i], written[j]):
                raise ValueError(f"{where}: the output arrays overlap in memory "
                                 "(each needs its own array)")
    if not written:
        return mats
    return [m.copy() if any(np.may_share_memory(m, o) for o in written) else m
            for m in mats]


# ---------------------------------------------------------------------------
# the program
# ---------------------------------------------------------------------------

cdef inline void _zero_gs(double* gs, const int[::1] gz) noexcept nogil:
    """Zero the gradient slots of a training replay from n_params on (the
    runs of Program.s_gz, see _scalar_dots)."""
    cdef Py_ssize_t q
    for q in range(0, gz.shape[0], 2):
        memset(gs + gz[q], 0, (gz[q + 1] - gz[q]) * sizeof(double))


cdef Py_ssize_t _WARN_PRODUCTS = -1    # fastgrad._summary's, once imported


# SGD steps that skip reading the parameters: a fused store (_store_sgd)
# writes each new .data into vs and the packed panels too, and notes the
# data write epoch after it (every write of an existing Value's data outside
# it adds 1: the .data setter, Value.__init__, the optimizers, num_grad's
# perturbations, every Program's store).  The next fused load of the same
# map, if the epoch has not moved and nothing else loaded in between, reads
# vs instead of the Values: the same floats, the same bits.  Everything here
# runs with the GIL, as do all the writers, so the counter needs no atomics.
cdef unsigned long long* _DATA_EPOCH = data_epoch_ptr()
cdef bint PARAM_REUSE = True
cdef Py_ssize_t _REUSES = 0             # steps that took it (for the tests)


def _set_param_reuse(bint on):
    """Testing/tuning hook: fused SGD steps reuse their own stored
    parameters when nothing wrote a Value's data since (default), or always
    read the Values; returns the old setting."""
    global PARAM_REUSE
    old = PARAM_REUSE
    PARAM_REUSE = on
    return old


def _data_epoch():
    """Testing hook: the data write epoch (see _set_param_reuse)."""
    return _DATA_EPOCH[0]


def _param_reuses():
    """Testing hook: how many fused loads reused their stored parameters."""
    return _REUSES


@cython.final
cdef class Program:
    """A recorded graph, replayed in C.  Built by fastgrad.compiled.compile.

    Threads: the replay methods (``forward``, ``value_and_grad``, ``batch``,
    ``predict``, ``sgd_step``, ``eval_params``) share the Program's work
    buffers, so a Program is not re-entrant: a call while another thread is
    inside one of them raises ``RuntimeError`` ("not re-entrant").
    ``num_grad``/``gradcheck`` of a Program (or of ``wrt_params(x)``) give
    every call its own scratch space: they run concurrently and correctly
    (gradcheck's analytic part is a ``value_and_grad`` and may raise that
    RuntimeError).

    Ctrl-C: the batch loops check for signals every few milliseconds of work
    and raise ``KeyboardInterrupt``; the parameters (``.data`` and ``.grad``)
    are then unchanged, while ``outputs``/``input_grad``/``out`` arrays may be
    partly written.

    Attributes
    ----------
    n_inputs : int
        Number of inputs (columns of a batch) the program reads per sample.
    n_outputs : int
        Number of outputs per sample; output 0 is the one ``value_and_grad``,
        ``batch`` and ``sgd_step`` differentiate and reduce.
    n_params : int
        Number of parameters (``len(program.params)``).
    """

    def __cinit__(self, *args, **kwargs):
        if len(args) != 1 or args[0] is not _TOKEN or kwargs:
            raise TypeError("Program objects are made by fastgrad.compile / "
                            "fastgrad.compiled.compile_graph")
        self._wf = self._wg = -1
        self._wbufs = []
        # sized by _run_src (never left uninitialised: the debug build checks;
        # one array for both: a compile's fixed cost)
        cdef double[::1] two = _np_zeros(2, _F64)
        self.gsp = two[:1]
        self.kwork = two[1:]

    def __init__(self, *args, **kwargs):
        raise TypeError("Program objects are made by fastgrad.compile / "
                        "fastgrad.compiled.compile_graph")

    # -- introspection ---------------------------------------------------------

    @property
    def params(self):
        """The parameter Values, in the order their gradients are reported."""
        return self._params

    @property
    def n_instructions(self):
        """Number of recorded operation nodes (scalar + batched tape)."""
        return self.n_srecorded + self.n_recorded

    @property
    def n_layers(self):
        """Number of dense layers found in the graph (each replaces a group of
        dot chains in the training replay; see ``fastgrad.compile``)."""
        return self.nlayers

    @property
    def has_penalty(self):
        """True when a parameter-only penalty term was recorded."""
        return self.pen_slot >= 0

    def tape(self):
        """The recorded tape as a dict of numpy arrays (copies), for inspection.

        One entry per recorded operation (fused multiply-adds already
        merged), before the layer and scalar-chain passes: what the graph
        computes, not how the replay schedules it (see ``n_layers``).
        An n-ary operation (``fastgrad.sum``, ``logsumexp``) lists its
        operands in ``"nary"`` as a run (count, operand...) at offset ``b``
        (batched tape, kind 4: an operand is a batched row >= 0 or a scalar
        slot ``s`` written ``-1 - s``) or ``a`` (scalar tape: slots)."""
        # (the recorder keeps no "out" arrays: instruction k writes scalar
        # slot n_params + n_const + k, batched row n_inputs + k)
        s, b = self._srecorded, self._recorded
        base = self.n_params + self.n_const
        return {
            "scalar": {"op": s["op"].copy(),
                       "out": np.arange(base, base + self.n_srecorded, dtype=np.int32),
                       "a": s["a"].copy(), "b": s["b"].copy(), "c": s["c"].copy(),
                       "nary": s["nary"].copy()},
            "batched": {"op": b["op"].copy(), "kind": b["kind"].copy(),
                        "out": np.arange(self.n_inputs, self.n_inputs + self.n_recorded,
                                         dtype=np.int32),
                        "a": b["a"].copy(), "b": b["b"].copy(), "s": b["s"].copy(),
                        "c": b["c"].copy(), "nary": b["nary"].copy()},
            "constants": np.asarray(self.consts)[:self.n_const].copy(),
        }

    def summary(self):
        """What recording found: dense layers, and what runs per instruction.

        Returns
        -------
        fastgrad.compiled.ProgramSummary
            The layers (shape, how each neuron's sum starts and where its bias
            is added, the activation ops in the layer's epilogue), the
            per-sample instructions run one at a time, and the share of the
            per-sample FLOPs on each path.  ``str()`` of it is a short table.

        Examples
        --------
        >>> import random; random.seed(0)
        >>> import fastgrad
        >>> from fastgrad.nn import MLP
        >>> model = MLP(2, [8, 1])
        >>> prog = fastgrad.compile(lambda x: model(x), 2, params=model.parameters())
        >>> s = prog.summary()
        >>> for layer in s.layers:
        ...     print(layer.describe())
        2 -> 8, sum starts at bias, bias first, relu
        8 -> 1, sum starts at bias, bias first, no activation
        >>> s.layer_share
        1.0
        """
        from fastgrad._summary import LayerSummary, ProgramSummary
        cdef int li, i, H, K, nep, sl, k, op
        cdef const int* m
        cdef int n_par = self.n_params, n_const = self.n_const
        layers = []
        layer_flops = 0
        for li in range(self.nlayers):
            m = &self.l_meta[li * LM_SIZE]
            H = m[LM_H]
            K = m[LM_K]
            nep = m[LM_NEP]
            starts = set()
            biases = set()
            n_post = 0
            for i in range(H):
                sl = self.l_slots[m[LM_B] + i]
                first = sl >= 0 and not (n_par <= sl < n_par + n_const)
                if first:
                    starts.add("bias")
                else:
                    c = (self.l_init[m[LM_INIT] + i] if sl < 0
                         else self.consts[sl - n_par])
                    starts.add(("first product" if copysign(1.0, c) < 0 else "0")
                               if c == 0.0 else "constant")
                last = m[LM_BL] >= 0 and self.l_slots[m[LM_BL] + i] >= 0
                n_post += last
                biases.add("first and last" if first and last else
                           "first" if first else "last" if last else "none")
            act = []
            for i in range(nep):
                op = self.l_ep[m[LM_EP] + i]
                name = _OP_NAMES.get(op, f"op {op}")
                if op_has_const(op):
                    name += f" {self.l_epc[m[LM_EP] + i]:g}"
                act.append(name)
            flops = 2 * H * K + n_post + H * nep
            layer_flops += flops
            layers.append(LayerSummary(
                K, H, starts.pop() if len(starts) == 1 else "mixed",
                biases.pop() if len(biases) == 1 else "mixed", tuple(act), flops))
        counts = {}
        other = products = 0
        for k in range(self.n_binstr):
            op = self.b_op[k]
            if op == OP_LAYER:
                continue
            if op == OP_FMULADD or (op == OP_MUL and (
                    self.b_kind[k] == K_SB or self.b_kind[k] == K_BS)):
                products += 1
            other += 2 if op == OP_FMULADD else 1
            name = "fmuladd" if op == OP_FMULADD else _OP_NAMES.get(op, f"op {op}")
            counts[name] = counts.get(name, 0) + 1
        per = tuple(sorted(counts.items(), key=lambda t: (-t[1], t[0])))
        f = self._found
        return ProgramSummary(tuple(layers), per, self.n_srecorded, layer_flops,
                              other, products, f["chains"], f["in_layers"],
                              f["repeating"], bool(self._recognised))

    def _performance_warning(self):
        """``self.summary().warning()`` (compile's PerformanceWarning text or
        None), without building the summary when the products of a scalar
        and a per-sample value outside layers are too few for the warning:
        building it on every compile was ~2% of a small one (callgrind,
        MLP(2, [16, 16, 1]), recorder, issue 21)."""
        global _WARN_PRODUCTS
        if _WARN_PRODUCTS < 0:      # (imported once, not per compile)
            from fastgrad._summary import WARN_PRODUCTS
            _WARN_PRODUCTS = WARN_PRODUCTS
        cdef Py_ssize_t k, products = 0
        cdef int op
        if not self._recognised:
            return None
        for k in range(self.n_binstr):
            op = self.b_op[k]
            if op == OP_FMULADD or (op == OP_MUL and (
                    self.b_kind[k] == K_SB or self.b_kind[k] == K_BS)):
                products += 1
        if products < _WARN_PRODUCTS:
            return None
        return self.summary().warning()

    def graph(self):
        """The recorded program as plain Python data (read-only, a new copy).

        What the replay runs, in order: the scalar instructions (run once
        per replay), then the per-sample (batched) instructions, dense
        layers as one ``"layer"`` instruction each.  ``fastgrad.export``
        builds its torch Module and ONNX model from this; the format is
        documented there (``fastgrad.export`` module docstring).

        Returns
        -------
        dict
            Keys ``n_inputs``, ``n_outputs``, ``n_params``, ``params`` (the
            parameter Values), ``constants``, ``scalar``, ``batched``,
            ``layers``, ``outputs``, ``penalty``.  Operands are pairs
            ``(kind, index)``: ``("input", i)``, ``("param", i)``,
            ``("const", k)``, ``("scalar", slot)``, ``("row", row)``.

        Examples
        --------
        >>> from fastgrad import Value, compile
        >>> w = Value(2.0)
        >>> g = compile(lambda x: (x[0] * w).relu(), 1, params=[w]).graph()
        >>> [(i["op"], i["args"]) for i in g["batched"]]
        [('mul', [('input', 0), ('param', 0)]), ('relu', [('row', 1)])]
        >>> g["outputs"]
        [('row', 2)]
        """
        return _program_graph(self)

    def to_torch(self, dtype=None):
        """This program as a ``torch.nn.Module``; see
        :func:`fastgrad.export.to_torch` (needs ``fastgrad[export]``)."""
        from fastgrad.export import to_torch
        return to_torch(self, dtype=dtype)

    def to_onnx(self, path=None, dtype=None, opset=None):
        """This program as an ONNX model; see :func:`fastgrad.export.to_onnx`
        (needs ``fastgrad[export]``)."""
        from fastgrad.export import to_onnx
        return to_onnx(self, path, dtype=dtype, opset=opset)

    def load_torch_state(self, module):
        """Copy trained weights from an exported module (or its
        ``state_dict()``) into this program's parameter Values; see
        :func:`fastgrad.export.load_torch_state`."""
        from fastgrad.export import load_torch_state
        load_torch_state(self, module)

    def __repr__(self):
        return (f"<fastgrad compiled Program: {self.n_inputs} inputs, "
                f"{self.n_params} params, {self.n_outputs} outputs, "
                f"{self.n_recorded} per-sample + {self.n_srecorded} shared "
                f"instructions{', penalty' if self.pen_slot >= 0 else ''}"
                f"{f', {self.nlayers} dense layers' if self.nlayers else ''}>")

    def __reduce__(self):
        raise TypeError("a compiled Program cannot be pickled; compile it again")

    # -- C entry points ----------------------------------------------------

    cdef int c_load_params(self) except -1:
        """Read the parameters' current .data into the program (for the
        replays and for ``c_eval``)."""
        self._load_params()
        if self.n_params > 0:
            memcpy(&self.vs1[0], &self.vs[0], self.n_params * sizeof(double))
        return 0

    cdef int _load_params(self) except -1:
        """``c_load_params`` for a replay: into its own buffer only."""
        cdef Py_ssize_t i
        cdef tuple ps = self._params
        cdef double* vs = &self.vs[0]
        self._vs_ok = False             # (the panels: layers_pack after it)
        if self.theta_in != NULL:
            for i in range(self.n_params):
                vs[i] = self.theta_in[i]
            return 0
        for i in range(self.n_params):
            # a borrowed reference: _params is our own tuple of Values
            vs[i] = (<Value>PyTuple_GET_ITEM(ps, i)).data
        return 0

    cdef double c_eval(self, const double* theta, const double* x) noexcept nogil:
        """Output 0 for one input vector ``x`` (n_inputs doubles).

        ``theta`` (n_params doubles) replaces the parameter values, or NULL to
        use those read by the last ``c_load_params``.  Uses private buffers:
        safe to interleave with the other methods (not with another thread).
        """
        return self.c_eval_in(theta, x, &self.vs1[0], &self.vb1[0])

    cdef double c_eval_in(self, const double* theta, const double* x, double* vs,
                          double* vb) noexcept nogil:
        """``c_eval`` on the caller's scratch: ``vs`` (n_scalar + 1 doubles,
        holding the constants and, if theta is NULL, the parameters) and
        ``vb`` (n_batched + 1 doubles)."""
        cdef int i
        if theta != NULL:
            for i in range(self.n_params):
                vs[i] = theta[i]
        forward_scalar(self.n_sinstr, &self.s_op[0], &self.s_out[0],
                       &self.s_a[0], &self.s_b[0], &self.s_c[0], &self.sd[0],
                       &self.s_nx[0], vs)
        for i in range(self.n_inputs):
            vb[i] = x[i]
        cdef LayerCtx L = self._layer_ctx(False)
        L.pw = NULL                       # unpacked: caller's scratch only
        forward_batched(self.n_binstr, &self.b_op[0], &self.b_kind[0],
                        &self.b_out[0], &self.b_a[0], &self.b_b[0],
                        &self.b_s[0], &self.b_c[0], NULL, NULL, &self.b_nx[0], &L,
                        vs, vb, 1, 1)
        if self.o_bat[0]:
            return vb[self.o_slot[0]]
        return vs[self.o_slot[0]]

    # -- internals -------------------------------------------------------------

    cdef LayerCtx _layer_ctx(self, bint grad) noexcept nogil:
        cdef LayerCtx L
        L.n = self.nlayers
        L.meta = &self.l_meta[0]
        L.rows = &self.l_rows[0]
        L.slots = &self.l_slots[0]
        L.init = &self.l_init[0]
        L.ep = &self.l_ep[0]
        L.epc = &self.l_epc[0]
        L.pw = &self.l_pw[0]
        L.acc = &self.l_lanes[0]
        L.work = NULL
        L.rmode = NULL
        L.fresh = 1
        return L

    cdef Py_ssize_t _col_work(self, bint grad) noexcept:
        """Element operations per batch column of a replay (for the signal
        checks): a layer counts H * (K + its epilogue ops) (three times with
        gradients), an OP_DOT or n-ary instruction its terms, any other
        instruction 1 (3 with gradients)."""
        cdef Py_ssize_t w
        cdef int k
        cdef const int* m
        if (self._wg if grad else self._wf) >= 0:
            return self._wg if grad else self._wf
        w = self.n_inputs + 1
        if grad:
            for k in range(self.n_binstr):
                if self.b_op[k] == OP_LAYER:
                    m = &self.l_meta[self.b_a[k] * LM_SIZE]
                    w += 3 * <Py_ssize_t>m[LM_H] * (m[LM_K] + m[LM_NEP])
                elif self.b_kind[k] == K_N:
                    w += 3 * self.b_nx[self.b_b[k]]
                else:
                    w += 3
            self._wg = w
        else:
            for k in range(self.n_finstr):
                if self.f_kind[k] == K_N:
                    w += self.f_nx[self.f_b[k]]
                else:
                    w += self.f_s[k] if self.f_op[k] == OP_DOT else 1
            self._wf = w
        return w

    cdef object _param_map(self, _Plan plan, int key):
        """The fused passes' map of ``plan`` (key as _plan's), or None where
        they do not apply."""
        if self._pmaps is None:
            self._pmaps = [None] * 4
        pm = self._pmaps[key]
        if pm is None:
            pm = make_param_map(self, plan)
            self._pmaps[key] = pm
        return pm if (<_ParamMap>pm).ok else None

    cdef int _load_fused(self, object pmo) except -1:
        """``_load_params`` that also writes each parameter into the packed
        panels and, where the map says so, runs the penalty's square chain
        (the scalar tape before it first, then the chain over the parameters
        as they are read, then the rest: the order of forward_scalar)."""
        cdef _ParamMap pm = <_ParamMap>pmo
        cdef tuple ps = self._params
        cdef double* vs = &self.vs[0]
        cdef double* pw = &self.l_pw[0]
        cdef const int* pwp = &pm.pw_pos[0]
        cdef const int* wtp = &pm.wt_pos[0]
        cdef Py_ssize_t i, n = self.n_params, lo, hi
        cdef int q, k = pm.sdot
        cdef double d, acc
        # vs and the panels still hold what this map's store wrote, and no
        # Value's data was written since: nothing to read (see PARAM_REUSE)
        cdef bint kept = (self._vs_ok and self._vs_map is pmo
                          and self._vs_epoch == _DATA_EPOCH[0] and PARAM_REUSE)
        global _REUSES
        self._vs_ok = False
        _REUSES += kept
        if not pm.fwd:
            if not kept:
                _load_pack(ps, 0, n, vs, pw, pwp, wtp)
            with nogil:
                forward_scalar(self.n_sinstr, &self.s_op[0], &self.s_out[0],
                               &self.s_a[0], &self.s_b[0], &self.s_c[0], &self.sd[0],
                               &self.s_nx[0], vs)
            return 0
        lo = pm.a0
        hi = pm.a0 + pm.T
        if not kept:
            # (kept: the store ran all this on the values it wrote)
            _load_pack(ps, 0, lo, vs, pw, pwp, wtp)
            forward_scalar(k, &self.s_op[0], &self.s_out[0], &self.s_a[0],
                           &self.s_b[0], &self.s_c[0], &self.sd[0], &self.s_nx[0], vs)
            acc = vs[self.s_a[k]]
            for i in range(lo, hi):
                # borrowed references, as in _load_params
                d = (<Value>PyTuple_GET_ITEM(ps, i)).data
                vs[i] = d
                # forward_scalar's OP_SDOT link for the square of slot i
                acc = op_forward(OP_ADD, acc, op_forward(OP_MUL, d, d, 0.0), 0.0)
                q = pwp[i]
                if q >= 0:
                    pw[q] = d
                    q = wtp[i]
                    if q >= 0:
                        pw[q] = d
            vs[self.s_out[k]] = acc
            _load_pack(ps, hi, n, vs, pw, pwp, wtp)
        forward_scalar(self.n_sinstr - k - 1, &self.s_op[k + 1], &self.s_out[k + 1],
                       &self.s_a[k + 1], &self.s_b[k + 1], &self.s_c[k + 1], &self.sd[0],
                       &self.s_nx[0], vs)
        return 0

    cdef int _store_sgd(self, double lr) except -1:
        """``_store_param_grads(False, None, lr, True)`` after a replay:
        through the fused map when the replay used one (each gradient added
        up as the generic path adds it: 0.0 + the layer's sum, then the
        penalty's two adds), else the generic store.  Each new .data also
        goes where this map's next load puts it (vs and the packed panels)
        and, where the load runs the penalty's chain, that chain runs here
        (see PARAM_REUSE): the next step need not read the Values."""
        cdef _ParamMap pm = <_ParamMap>self._fmap
        if pm is None:
            return self._store_param_grads(False, None, lr, True)
        self._fmap = None
        cdef _SgdStore S
        cdef Py_ssize_t i, n = self.n_params, lo = n, hi = n
        cdef int k = pm.sdot
        cdef double d, acc
        S.ps = <PyObject*>self._params
        S.gs = &self.gs[0]
        S.vs = &self.vs[0]
        S.pw = &self.l_pw[0]
        S.pwp = &pm.pw_pos[0]
        S.wtp = &pm.wt_pos[0]
        S.lsum = &self.l_sums[0]
        S.lsp = &pm.ls_pos[0]
        S.slow = &pm.slow[0]
        S.gp = self._gp
        S.lr = lr
        S.lo = S.hi = 0
        S.n = n
        S.ahead = STORE_AHEAD if PARAM_REUSE else n    # (off: as on main)
        if self._pen_on:
            S.lo = pm.a0
            S.hi = pm.a0 + pm.T
        if not PARAM_REUSE:
            # the store without the reuse (for A/B): last parameter first, as
            # _store_param_grads (the next replay's load starts at the first)
            for i in range(n - 1, -1, -1):
                _sgd_store_one(&S, i, False)
            self._vs_ok = False
            _DATA_EPOCH[0] += 1
            return 0
        # first parameter first: the load's order, its chain over the new
        # values (the load's additions, in its order) and what the scalar
        # tape computes before it (which reads parameters below a0 only)
        if pm.fwd:
            lo = pm.a0
            hi = pm.a0 + pm.T
        for i in range(lo):
            _sgd_store_one(&S, i, True)
        if pm.fwd:
            forward_scalar(k, &self.s_op[0], &self.s_out[0], &self.s_a[0],
                           &self.s_b[0], &self.s_c[0], &self.sd[0], &self.s_nx[0],
                           S.vs)
            acc = S.vs[self.s_a[k]]
            for i in range(lo, hi):
                d = _sgd_store_one(&S, i, True)
                # forward_scalar's OP_SDOT link for the square of slot i
                acc = op_forward(OP_ADD, acc, op_forward(OP_MUL, d, d, 0.0), 0.0)
            S.vs[self.s_out[k]] = acc
            for i in range(hi, n):
                _sgd_store_one(&S, i, True)
        _DATA_EPOCH[0] += 1             # other programs: read them again
        self._vs_epoch = _DATA_EPOCH[0]
        self._vs_map = pm
        self._vs_ok = True
        return 0

    cdef _Plan _plan(self, bint want_inputs, bint with_pen):
        cdef int key = 2 * want_inputs + with_pen
        plan = self._plans[key]
        if plan is None:
            plan = make_plan(self, want_inputs, with_pen)
            self._plans[key] = plan
        return <_Plan>plan

    cdef int _ensure(self, Py_ssize_t cols, bint grad, Py_ssize_t grows=0) except -1:
        """Size the work buffers for ``cols`` columns; sets ``self.ld``.

        With gradients: values of every batched slot and ``grows`` gradient
        rows (the plan's, see _grad_rows).  Forward only: the reused rows of
        the forward-only allocation.
        """
        cdef Py_ssize_t ld = (cols + 7) & ~(<Py_ssize_t>7)   # 64-byte rows
        # rows 2 or 4 KiB apart share L1 sets, and the layer kernels read many
        # rows at the same column: one more 64-byte line per row then
        # (measured: MLP(2, [64, 64, 1]) on 1,000 rows, chunks of 512
        # columns, 0.50 ms -> 0.36 ms per step)
        if ld % 256 == 0:
            ld += 8
        cdef Py_ssize_t rows = max(self.n_batched if grad else self.n_frows, 1)
        # zeros, not empty: the layer kernels compute whole vectors into the
        # padding columns (n up to ld), which must hold finite numbers
        if rows * ld > self.cap_cols:
            self.vb = np.zeros(rows * ld, np.float64)
            self.cap_cols = rows * ld
        grows = max(grows, 1)
        if grad and grows * ld > self.cap_rows_g:
            self.gb = np.zeros(grows * ld, np.float64)
            self.cap_rows_g = grows * ld
        self.ld = ld
        return 0

    cdef Py_ssize_t _chunk(self, Py_ssize_t B, bint grad, _Plan plan=None) noexcept:
        """Columns per chunk of a replay over B columns (``plan``: the
        training replay's, whose gradient rows it counts)."""
        cdef Py_ssize_t per_col, ch, nch, least = 0, rnd = 32
        cdef int li
        cdef const int* m
        # a layer with more weights than L2 holds: see LAYER_MIN_COLS
        for li in range(self.nlayers if grad else 0):
            m = &self.l_meta[li * LM_SIZE]
            if <Py_ssize_t>m[LM_H] * m[LM_K] * 8 > LAYER_L2_BYTES:
                least = LAYER_MIN_COLS
        if grad and CHUNK_COLS > 0:
            ch = CHUNK_COLS
            rnd = 8
        elif grad and self.nlayers == 0 and plan is not None:
            # no layers: by the working set (see FIT_CHUNKS); chunks of
            # whole 64-byte lines
            rnd = 8
            ch = FIT_CHUNKS * CHUNK_BYTES // (8 * (max(self.n_batched, 1) + plan.n_grows))
            if ch < CHUNK_FIT_MIN:
                ch = min(STREAM_CHUNKS * CHUNK_BYTES // (16 * plan.n_grows),
                         CHUNK_STREAM_MAX)
        elif grad:
            per_col = 16 * max(self.n_batched, 1)
            ch = max(CHUNK_BYTES // per_col, least)
        else:
            # forward only (no layer kernels: its tape runs OP_DOT rows, which
            # want small chunks): a multiple of the dot block (no scalar
            # tails but in the last chunk)
            per_col = 8 * max(self.n_frows, 1)
            ch = FWD_CHUNK_BYTES // per_col
            ch = max(ch - ch % DOT_BLOCK, DOT_BLOCK)
            return B if ch >= B else min(ch, MAX_CHUNK - MAX_CHUNK % DOT_BLOCK)
        if ch < MIN_CHUNK:
            ch = MIN_CHUNK
        if ch > MAX_CHUNK:
            ch = MAX_CHUNK
        if ch >= B:
            return B
        # equal chunks rather than a full run and a small remainder, each a
        # multiple of rnd columns (32 with layers: whole register tiles of
        # the layer kernels)
        nch = (B + ch - 1) // ch
        ch = (B + nch - 1) // nch
        return min((ch + rnd - 1) // rnd * rnd, B)

    def _fused_params(self, bint want_inputs=False, bint with_pen=True):
        """Testing hook: how an SGD step of this plan runs the parameters'
        passes: None (the generic passes), else (the penalty's square chain
        fused: its first parameter and length, or None; whether its forward
        runs inside the load)."""
        pm = self._param_map(self._plan(want_inputs, with_pen),
                             2 * want_inputs + with_pen)
        if pm is None:
            return None
        if (<_ParamMap>pm).sdot < 0:
            return (None, False)
        return (((<_ParamMap>pm).a0, (<_ParamMap>pm).T), (<_ParamMap>pm).fwd)

    def _gs_zero_runs(self):
        """Testing hook: the runs [lo, hi) of gradient slots from n_params on
        that a training replay zeroes (see _scalar_dots)."""
        return [(int(self.s_gz[q]), int(self.s_gz[q + 1]))
                for q in range(0, self.s_gz.shape[0], 2)]

    def _grad_rows(self, bint want_inputs=True, bint with_pen=False):
        """Testing hook: (the gradient row of each batched slot (-1: none),
        the number of gradient rows) of a training replay (see _grad_rows)."""
        cdef _Plan plan = self._plan(want_inputs, with_pen)
        return np.asarray(plan.gm).copy(), plan.n_grows

    cdef object _sources(self, inputs, str where):
        """Inputs as a list of 2-D float64 arrays whose columns add up.

        ``inputs`` is one (B, n_inputs) array-like, or a tuple of arrays
        ((B,) or (B, k)) whose columns are concatenated (``(X, y)``).
        """
        if isinstance(inputs, tuple):
            if not inputs:
                raise ValueError(f"{where}: empty tuple of input arrays")
            mats = [_as_matrix(a, where) for a in inputs]
        else:
            mats = [_as_matrix(inputs, where)]
        B = mats[0].shape[0]
        cols = 0
        for m in mats:
            if m.shape[0] != B:
                raise ValueError(f"{where}: input arrays have different numbers of "
                                 f"rows: {[m.shape[0] for m in mats]}")
            cols += m.shape[1]
        if cols != self.n_inputs:
            # the shapes the caller passed (a 1-D array was read as a column)
            shapes = [np.shape(a) for a in inputs] if isinstance(inputs, tuple) \
                else [np.shape(inputs)]
            hint = ""
            if len(shapes) == 1 and len(shapes[0]) == 1 and self.n_inputs > 1:
                hint = (f"; a 1-D array is read as one column of {shapes[0][0]} "
                        "rows: for one sample of "
                        f"{self.n_inputs} inputs pass x.reshape(1, -1) (or use "
                        "forward(x))")
            raise ValueError(f"{where}: expected {self.n_inputs} input columns "
                             f"(shape (batch, {self.n_inputs})), got {cols} "
                             f"(shape{'s' if len(mats) > 1 else ''} "
                             f"{shapes if len(mats) > 1 else shapes[0]}){hint}")
        if B == 0:
            raise ValueError(f"{where}: empty batch (0 rows)")
        return mats

    cdef object _vector(self, x, str where):
        arr = np.asarray(x)
        if arr.ndim != 1 or arr.shape[0] != self.n_inputs:
            raise ValueError(f"{where}: expected one input vector of length "
                             f"{self.n_inputs}, got shape {arr.shape}"
                             + ("; use predict()/batch() for a batch of rows"
                                if arr.ndim == 2 else ""))
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{where}: inputs must be real numbers, got dtype "
                            f"{arr.dtype}")
        return [np.ascontiguousarray(arr, dtype=np.float64).reshape(1, -1)]

    cdef double _run(self, list mats, Py_ssize_t B, int reduce_mode,
                     bint grad, bint want_inputs, bint with_pen,
                     double[:, ::1] outv, double[:, ::1] ging,
                     int nthreads=1) except? -1.0:
        """Forward (and backward) over B >= 1 rows; returns reduced output 0.

        ``mats``: the inputs from ``_sources``.  reduce_mode: 0 sum, 1 mean.
        Parameter gradients are left in self.gs (slots 0..n_params-1); input
        gradients go to ``ging`` (B, n_inputs) when given.  ``outv`` (B,
        n_outputs) receives per-row outputs.  ``nthreads``: at most that many
        threads (the result does not depend on it, see _replay_blocks.pxi).
        """
        cdef Sources S
        cdef const double[:, ::1] mv
        cdef list keep = []
        cdef int q
        if len(mats) > 64:
            mats = [np.ascontiguousarray(np.hstack(mats))]
        S.n = len(mats)
        for q in range(S.n):
            mv = mats[q]
            keep.append(mv)
            S.cols[q] = mv.shape[1]
            S.ptr[q] = &mv[0, 0] if mv.shape[1] > 0 else NULL
        return self._run_src(&S, B, reduce_mode, grad, want_inputs, with_pen,
                             outv, ging, nthreads)

    cdef double _run_src(self, const Sources* S, Py_ssize_t B, int reduce_mode,
                         bint grad, bint want_inputs, bint with_pen,
                         double[:, ::1] outv, double[:, ::1] ging,
                         int nthreads=1) except? -1.0:
        """``_run`` on input columns the caller holds (see ``Sources``)."""
        if B == 1 and _row_ok(self, grad):
            # one row: scalar C on one column, the same bits (_replay_row.pxi)
            return _row_run(self, S, reduce_mode, grad, want_inputs, with_pen,
                            &outv[0, 0] if outv is not None else NULL,
                            &ging[0, 0] if ging is not None and self.n_inputs > 0
                            else NULL)
        cdef _Job J
        cdef _Worker* W = NULL
        cdef _Plan plan = self._plan(want_inputs, with_pen) if grad else None
        cdef Py_ssize_t ch = self._chunk(B, grad, plan), m, rows, grows, acc_size, t
        cdef LayerCtx L = self._layer_ctx(grad)
        cdef double[::1] b_vb, b_gb, b_gsp, b_acc, b_work, b_out0
        cdef list bufs
        cdef int res = 0
        cdef double total
        cdef const unsigned char* sma = NULL
        cdef const unsigned char* smb = NULL
        cdef _ParamMap pm = None
        cdef Py_ssize_t q
        cdef int sl
        global LAST_CHUNK
        self._fmap = None
        if grad and self._sgd and self.theta_in == NULL and FUSED_PARAMS:
            pm = <_ParamMap>self._param_map(plan, 2 * want_inputs + with_pen)
        # blocks: about BLOCK_COLS columns (whole chunks of ch at least), as
        # many as full ones would make, of equal tiles (see _block_start)
        m = max(1, (BLOCK_COLS + ch - 1) // ch)
        J.nblocks = <int>((B + ch * m - 1) // (ch * m))
        J.ntiles = (B + BLOCK_TILE - 1) // BLOCK_TILE
        J.bcols = (min(B, ((J.ntiles + J.nblocks - 1) // J.nblocks) * BLOCK_TILE)
                   if J.nblocks > 1 else B)
        if not EQUAL_BLOCKS:
            J.bcols = ch * m
            J.ntiles = -J.bcols
        LAST_CHUNK = ch
        nthreads = max(1, min(nthreads, J.nblocks, MAX_THREADS))
        grows = plan.n_grows if grad else 0
        self._ensure(ch, grad, grows)
        J.ld = self.ld
        J.B = B
        J.ch = ch
        J.S = S
        J.grad = grad
        J.t_n = self.n_binstr if grad else self.n_finstr
        J.t_op = &self.b_op[0] if grad else &self.f_op[0]
        J.t_kind = &self.b_kind[0] if grad else &self.f_kind[0]
        J.t_out = &self.b_out[0] if grad else &self.f_out[0]
        J.t_a = &self.b_a[0] if grad else &self.f_a[0]
        J.t_b = &self.b_b[0] if grad else &self.f_b[0]
        J.t_s = &self.b_s[0] if grad else &self.f_s[0]
        J.t_c = &self.b_c[0] if grad else &self.f_c[0]
        J.t_nx = &self.b_nx[0] if grad else &self.f_nx[0]
        J.bmn = NULL
        J.bsm = NULL
        J.d_s = &self.d_s[0]
        J.d_x = &self.d_x[0]
        # forward only: the tape on reused rows (see _alloc_rows)
        J.o_slot = &self.o_slot[0] if grad else &self.f_oslot[0]
        J.o_bat = &self.o_bat[0]
        J.n_out = self.n_outputs
        J.n_in = self.n_inputs
        J.o0 = J.o_slot[0]
        J.o_bat0 = self.o_bat[0]
        J.po = &outv[0, 0] if outv is not None else NULL
        J.pgi = &ging[0, 0] if ging is not None and self.n_inputs > 0 else NULL
        J.seed = (1.0 / B) if reduce_mode == 1 else 1.0
        J.total = 0.0
        J.per_col_work = self._col_work(grad)
        J.sig_work = SIGNAL_WORK
        J.work = 0
        J.gs = &self.gs[0]
        J.lsum = &self.l_sums[0]
        J.nbsl = 0
        J.gm = NULL
        if grad:
            J.gm = &plan.gm[0]
            J.bma = &plan.bma[0]
            J.bmb = &plan.bmb[0]
            J.bms = &plan.bms[0]
            J.lw = &plan.lw[0]
            J.bsl = &plan.bsl[0]
            J.nbsl = plan.bsl.shape[0] - 1
            J.in_ng = &plan.in_ng[0]
            J.bmn = &plan.bmn[0]
            J.bsm = &plan.bsm[0]
            L.rmode = &plan.lrm[0]
            sma = &plan.sma[0]
            smb = &plan.smb[0]
        # the workers' buffers: worker 0 the Program's own, the others cached
        # in _wbufs (allocated with the GIL, before the replay starts)
        if self.gsp.shape[0] < self.n_scalar + 1:
            self.gsp = np.zeros(self.n_scalar + 1, np.float64)
        if self.kwork.shape[0] < J.bcols + FG_WORK:
            self.kwork = np.zeros(J.bcols + FG_WORK, np.float64)
        acc_size = layers_acc_size(&L) + 1
        rows = max(self.n_batched if grad else self.n_frows, 1) * J.ld
        grows = max(grows, 1) * J.ld
        W = <_Worker*>PyMem_Malloc(nthreads * sizeof(_Worker))
        if W == NULL:
            raise MemoryError()
        try:
            for t in range(nthreads):
                W[t].J = &J
                W[t].index = <int>t
                W[t].L = L
                if t == 0:
                    W[t].vb = &self.vb[0]
                    W[t].gb = &self.gb[0] if grad else NULL
                    W[t].gsp = &self.gsp[0]
                    W[t].out0 = &self.kwork[FG_WORK]
                    W[t].L.work = &self.kwork[0]
                    # one block: its running sums are the totals
                    W[t].L.acc = (&self.l_sums[0] if J.nblocks == 1
                                  else &self.l_lanes[0])
                    continue
                while len(self._wbufs) < t:
                    self._wbufs.append(None)
                bufs = self._wbufs[t - 1]
                if (bufs is None or bufs[0].shape[0] < rows
                        or (grad and bufs[1].shape[0] < grows)
                        or bufs[2].shape[0] < self.n_scalar + 1
                        or bufs[3].shape[0] < acc_size
                        or bufs[4].shape[0] < J.bcols + FG_WORK):
                    # zeros, not empty: see _ensure
                    bufs = [np.zeros(rows, np.float64),
                            np.zeros(grows if grad else 1, np.float64),
                            np.zeros(self.n_scalar + 1, np.float64),
                            np.zeros(acc_size, np.float64),
                            np.zeros(J.bcols + FG_WORK, np.float64)]
                    self._wbufs[t - 1] = bufs
                b_vb = bufs[0]
                b_gb = bufs[1]
                b_gsp = bufs[2]
                b_acc = bufs[3]
                b_work = bufs[4]
                W[t].vb = &b_vb[0]
                W[t].gb = &b_gb[0] if grad else NULL
                W[t].gsp = &b_gsp[0]
                W[t].L.acc = &b_acc[0]
                W[t].L.work = &b_work[0]
                W[t].out0 = &b_work[FG_WORK]
            if pm is not None:
                # an SGD step's fused passes (see _ParamMap): the load packs
                # the weights and runs the penalty's chain; _store_sgd adds
                # the gradients up
                self._load_fused(pm)
                smb = &pm.smb[0]
                J.vs = &self.vs[0]
                with nogil:
                    _zero_gs(J.gs, self.s_gz)
                    for q in range(pm.slow_list.shape[0] - 1):
                        J.gs[pm.slow_list[q]] = 0.0
                    layers_pack_consts(&L)
                    res = _run_job(&J, W, nthreads)
                    if res == 0:
                        for q in range(pm.slow_list.shape[0] - 1):
                            sl = pm.slow_list[q]
                            if pm.ls_pos[sl] >= 0:
                                J.gs[sl] += J.lsum[pm.ls_pos[sl]]
                        if with_pen and self.pen_slot >= 0:
                            J.gs[self.pen_slot] += 1.0
                        backward_scalar(self.n_sinstr, &self.s_op[0], &self.s_out[0],
                                        &self.s_a[0], &self.s_b[0], &self.s_c[0],
                                        &self.sd[0], &self.s_nx[0], sma, smb, J.vs,
                                        J.gs)
                if res == 0:
                    self._fmap = pm
                    self._pen_on = pm.sdot >= 0 and plan.smb[pm.sdot] != M_SKIP
                    if self._pen_on:
                        self._gp = 0.0 + J.gs[self.s_out[pm.sdot]]
            else:
                self._load_params()
                J.vs = &self.vs[0]
            with nogil:
                if pm is None:
                    forward_scalar(self.n_sinstr, &self.s_op[0], &self.s_out[0],
                                   &self.s_a[0], &self.s_b[0], &self.s_c[0], &self.sd[0],
                                   &self.s_nx[0], &self.vs[0])
                if grad and pm is None:
                    memset(J.gs, 0, self.n_params * sizeof(double))
                    _zero_gs(J.gs, self.s_gz)
                    layers_pack(&L, J.vs)   # (forward only: no layers)
                if pm is None:
                    res = _run_job(&J, W, nthreads)
                if grad and res == 0 and pm is None:
                    layers_reduce(&L, J.lw, J.lsum, J.gs)
                    if with_pen and self.pen_slot >= 0:
                        J.gs[self.pen_slot] += 1.0
                    backward_scalar(self.n_sinstr, &self.s_op[0], &self.s_out[0],
                                    &self.s_a[0], &self.s_b[0], &self.s_c[0],
                                    &self.sd[0], &self.s_nx[0], sma, smb, J.vs, J.gs)
        finally:
            PyMem_Free(W)
        if res < 0:
            return -1.0         # the KeyboardInterrupt (or handler's error) is set
        total = J.total
        if reduce_mode == 1:
            total = total * (1.0 / B)
        if with_pen and self.pen_slot >= 0:
            total = total + self.vs[self.pen_slot]
        return total

    cdef int _enter(self, str where) except -1:
        if self._busy:
            raise RuntimeError(f"{where}: this Program is already running (in "
                               "another thread); a Program is not re-entrant")
        self._busy = True
        return 0

    cdef int _store_param_grads(self, bint accumulate, param_grad,
                                double lr=0.0, bint update=False) except -1:
        """Parameter gradients to ``.grad`` (and ``param_grad``); with
        ``update`` also the SGD step ``p.data -= lr * grad`` (one pass)."""
        cdef Py_ssize_t i
        cdef tuple ps = self._params
        cdef double[::1] pg
        cdef const double* gs = &self.gs[0]
        cdef PyObject* p
        if param_grad is not None:
            pg = param_grad
        if param_grad is not None:
            for i in range(self.n_params):
                pg[i] = gs[i]
        # borrowed references, as in _load_params; one loop per case
        if update and not accumulate:          # sgd_step
            # last parameter first: the next replay reads .data from the
            # first on, so what this loop touched last is what it finds
            # still in cache
            for i in range(self.n_params - 1, -1, -1):
                p = PyTuple_GET_ITEM(ps, i)
                (<Value>p).grad = gs[i]
                (<Value>p).data = (<Value>p).data - lr * gs[i]
            _DATA_EPOCH[0] += 1
            return 0
        if update:
            for i in range(self.n_params):
                (<Value>PyTuple_GET_ITEM(ps, i)).data -= lr * gs[i]
            _DATA_EPOCH[0] += 1
        if accumulate:
            for i in range(self.n_params):
                (<Value>PyTuple_GET_ITEM(ps, i)).grad += gs[i]
        else:
            for i in range(self.n_params):
                (<Value>PyTuple_GET_ITEM(ps, i)).grad = gs[i]
        return 0

    cdef object _check_param_grad(self, param_grad, str where):
        if param_grad is None:
            return None
        if not isinstance(param_grad, np.ndarray) or param_grad.dtype != np.float64 \
                or param_grad.shape != (self.n_params,) \
                or not param_grad.flags.c_contiguous or not param_grad.flags.writeable:
            raise ValueError(f"{where}: param_grad must be a writeable contiguous "
                             f"float64 array of shape ({self.n_params},), got "
                             f"{type(param_grad).__name__} "
                             f"{getattr(param_grad, 'dtype', '')} "
                             f"{getattr(param_grad, 'shape', '')}")
        return param_grad

    # -- public replay -------------------------------------------------------

    def forward(self, x):
        """Outputs of the program for one input vector.

        Parameters
        ----------
        x : sequence of float, length ``n_inputs``

        Returns
        -------
        float (one output) or ndarray of shape (n_outputs,)

        Examples
        --------
        >>> from fastgrad import Value, compile
        >>> w = Value(2.0)
        >>> compile(lambda x: x[0] * w, 1, params=[w]).forward([4.0])
        8.0
        """
        cdef Py_buffer bx
        cdef Sources S
        if ROW_PATH and type(x) is np.ndarray and _try_buffer(x, &bx):
            # the usual call, a 1-D float64 array: its buffer is all the
            # checks (a one-row call is short: the Python around it counts)
            try:
                if bx.ndim == 1 and bx.shape[0] == self.n_inputs and _is_f64(bx.format):
                    _one_source(&S, <const double*>bx.buf, self.n_inputs)
                    return _row_forward_call(self, &S)
            finally:
                PyBuffer_Release(&bx)
        mats = self._vector(x, "forward")
        out = np.empty((1, self.n_outputs), np.float64)
        self._enter("forward")
        try:
            self._run(mats, 1, 0, False, False, False, out, None)
        finally:
            self._busy = False
        if self.n_outputs == 1:
            return float(out[0, 0])
        return out[0]

    def __call__(self, x):
        """``prog(x)`` is ``prog.forward(x)``."""
        return self.forward(x)

    def value_and_grad(self, x, bint accumulate=True, param_grad=None):
        """Output 0 for one input vector and its gradient.

        Parameters
        ----------
        x : sequence of float, length ``n_inputs``
        accumulate : bool, default True
            Add the parameter gradients to each parameter's ``.grad`` (as
            ``backward()``); False sets ``.grad`` instead.
        param_grad : ndarray of float64, shape (n_params,), optional
            Also receives the parameter gradients (set, not added).

        Returns
        -------
        value : float
        input_grad : ndarray of shape (n_inputs,)

        Examples
        --------
        >>> from fastgrad import Value, compile
        >>> w = Value(2.0)
        >>> prog = compile(lambda x: x[0] * w, 1, params=[w])
        >>> val, dx = prog.value_and_grad([4.0])
        >>> val, float(dx[0]), w.grad
        (8.0, 2.0, 4.0)
        """
        cdef Py_buffer bx
        cdef Sources S
        if ROW_PATH and type(x) is np.ndarray and _try_buffer(x, &bx):
            # the usual call (see forward)
            try:
                if bx.ndim == 1 and bx.shape[0] == self.n_inputs and _is_f64(bx.format):
                    _one_source(&S, <const double*>bx.buf, self.n_inputs)
                    return _row_value_and_grad_call(self, &S, accumulate, param_grad)
            finally:
                PyBuffer_Release(&bx)
        mats = self._vector(x, "value_and_grad")
        pg = self._check_param_grad(param_grad, "value_and_grad")
        gin = np.zeros((1, self.n_inputs), np.float64)
        self._enter("value_and_grad")
        try:
            val = self._run(mats, 1, 0, True, True, False, None,
                            gin if self.n_inputs > 0 else None)
            self._store_param_grads(accumulate, pg)
        finally:
            self._busy = False
        return val, gin[0]

    def batch(self, inputs, reduce="mean", bint grad=True, outputs=None,
              param_grad=None, input_grad=None, bint accumulate=True,
              num_threads=1):
        """Replay over the rows of a batch: reduced output 0, plus the penalty.

        The loss is ``reduce_i out0(row_i) + penalty`` where ``reduce`` is the
        sum (in row order) or the mean (that sum times ``1.0 / B``, as
        micrograd's demo writes it).  With ``grad=True`` its gradient with
        respect to every parameter is computed (the batch-sum of per-row
        contributions) and lands in the parameters' ``.grad``.

        Parameters
        ----------
        inputs : array_like (B, n_inputs), or tuple of arrays
            One row per sample.  A tuple such as ``(X, y)`` of (B,) / (B, k)
            arrays is read as their columns side by side (no copy).  Other
            dtypes/layouts than C-contiguous float64 are converted (a copy
            of the input only).
        reduce : {"mean", "sum"}
        grad : bool, default True
        outputs : ndarray (B, n_outputs) float64, optional
            Receives every output for every row.
        param_grad : ndarray (n_params,) float64, optional
            Receives the parameter gradients (set).
        input_grad : ndarray (B, n_inputs) float64, optional
            Receives d(loss)/d(input) for every row.
        accumulate : bool, default True
            Add to ``.grad`` (True, as ``backward()``) or set it (False).
        num_threads : int or None, default 1
            Threads to use (None: every CPU this process may run on).  The
            rows are cut into fixed blocks whose partial sums are combined in
            block order: the loss, outputs and gradients are the same bits
            whatever the number of threads.  The call still holds the
            Program (not re-entrant) and answers Ctrl-C.

        Returns
        -------
        float
            The loss.

        Examples
        --------
        >>> import numpy as np
        >>> from fastgrad import Value, compile
        >>> w = Value(2.0)
        >>> prog = compile(lambda x: x[0] * w, 1, params=[w])
        >>> prog.batch(np.array([[1.0], [3.0]]), reduce="sum"), w.grad
        (8.0, 4.0)
        """
        return self._batch(inputs, reduce, grad, outputs, param_grad, input_grad,
                           accumulate, 0.0, False, _threads(num_threads, "batch"))

    cdef double _batch(self, inputs, reduce, bint grad, outputs, param_grad,
                       input_grad, bint accumulate, double lr,
                       bint update, int nthreads=1) except? -1.0:
        cdef int mode
        if reduce == "mean":
            mode = 1
        elif reduce == "sum":
            mode = 0
        else:
            raise ValueError(f"batch: reduce must be 'mean' or 'sum', got {reduce!r}")
        mats = self._sources(inputs, "batch")
        B = mats[0].shape[0]
        outv = self._check_out(outputs, B, self.n_outputs, "outputs", "batch")
        ging = None
        if input_grad is not None:
            if not grad:
                raise ValueError("batch: input_grad given but grad=False")
            ging = self._check_out(input_grad, B, self.n_inputs, "input_grad",
                                   "batch")
        pg = self._check_param_grad(param_grad, "batch")
        if not grad and pg is not None:
            raise ValueError("batch: param_grad given but grad=False")
        mats = _unshare(mats, (outv, ging, pg), "batch")
        self._enter("batch")
        try:
            # an SGD step (sgd_step) may use the fused parameter passes
            self._sgd = update and not accumulate and pg is None
            val = self._run(mats, B, mode, grad, ging is not None, True, outv, ging,
                            nthreads)
            self._sgd = False
            if grad and update and not accumulate and pg is None:
                self._store_sgd(lr)
            elif grad:
                self._store_param_grads(accumulate, pg, lr, update)
        finally:
            self._sgd = False
            self._fmap = None
            self._busy = False
        return val

    cdef object _check_out(self, arr, Py_ssize_t B, int k, str name, str where):
        if arr is None:
            return None
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float64 \
                or arr.shape != (B, k) or not arr.flags.c_contiguous \
                or not arr.flags.writeable:
            raise ValueError(f"{where}: {name} must be a writeable C-contiguous "
                             f"float64 array of shape ({B}, {k}), got "
                             f"{type(arr).__name__} {getattr(arr, 'dtype', '')} "
                             f"{getattr(arr, 'shape', '')}")
        return arr

    def predict(self, inputs, out=None, num_threads=1):
        """Outputs for every row, forward only (no gradient buffers).

        Parameters
        ----------
        inputs : array_like (B, n_inputs), or tuple of arrays (see ``batch``)
        out : ndarray, optional
            (B,) (one output) or (B, n_outputs) float64 array to fill.  It
            may overlap ``inputs`` (``predict(X[:-1], out=X[1:])``): the
            inputs are then copied first, as NumPy's ufuncs do.
        num_threads : int or None, default 1
            Threads to use (None: every CPU); the outputs do not depend on it.

        Returns
        -------
        ndarray of shape (B,) (one output) or (B, n_outputs)

        Examples
        --------
        >>> import numpy as np
        >>> from fastgrad import Value, compile
        >>> w = Value(2.0)
        >>> compile(lambda x: (x[0] * w).relu(), 1, params=[w]).predict(
        ...     np.array([[1.0], [-3.0]])).tolist()
        [2.0, 0.0]
        """
        cdef int nthreads = _threads(num_threads, "predict")
        mats = self._sources(inputs, "predict")
        B = mats[0].shape[0]
        if out is None:
            res = np.empty((B, self.n_outputs), np.float64)
        else:
            res = out
            if (self.n_outputs == 1 and isinstance(out, np.ndarray)
                    and out.shape == (B,) and out.dtype == np.float64
                    and out.flags.c_contiguous):
                res = out.reshape(B, 1)       # a view
            self._check_out(res, B, self.n_outputs, "out", "predict")
            mats = _unshare(mats, (res,), "predict")
        self._enter("predict")
        try:
            self._run(mats, B, 0, False, False, False, res, None, nthreads)
        finally:
            self._busy = False
        if out is not None:
            return out
        return res[:, 0] if self.n_outputs == 1 else res

    def sgd_step(self, inputs, lr, reduce="mean", outputs=None, num_threads=1):
        """One plain SGD step: ``batch`` then ``p.data -= lr * grad``.

        Each parameter's ``.grad`` is *set* to this batch's gradient (as
        ``zero_grad(); loss.backward()`` would leave it) before the update.

        Parameters
        ----------
        inputs : see ``batch``
        lr : float
            Finite and >= 0 (as ``fastgrad.optim.SGD`` requires).
        reduce : {"mean", "sum"}
        outputs : ndarray (B, n_outputs) float64, optional
        num_threads : int or None, default 1
            Threads to use (None: every CPU); as in ``batch``, the result
            does not depend on it.

        Returns
        -------
        float
            The loss before the update.

        Examples
        --------
        >>> import numpy as np
        >>> from fastgrad import Value, compile
        >>> w = Value(2.0)
        >>> prog = compile(lambda x: x[0] * w, 1, params=[w])
        >>> prog.sgd_step(np.array([[1.0]]), 0.5), w.data
        (2.0, 1.5)
        """
        return self._batch(inputs, reduce, True, outputs, None, None, False,
                           _learning_rate(lr, "sgd_step"), True,
                           _threads(num_threads, "sgd_step"))

    def eval_params(self, theta, x):
        """Output 0 for parameter values ``theta`` and one input ``x``.

        Nothing is stored: neither the parameters' ``.data`` nor any
        gradient changes.  The C twin ``Program.c_eval`` (see _replay.pxd)
        is what finite-difference loops call.

        Examples
        --------
        >>> from fastgrad import Value, compile
        >>> w = Value(2.0)
        >>> compile(lambda x: x[0] * w, 1, params=[w]).eval_params([5.0], [3.0])
        15.0
        """
        cdef const double[::1] th = _real_vector(theta, "parameter values")
        cdef const double[::1] xv = _real_vector(x, "inputs")
        if th.shape[0] != self.n_params:
            raise ValueError(f"eval_params: expected {self.n_params} parameter "
                             f"values, got {th.shape[0]}")
        if xv.shape[0] != self.n_inputs:
            raise ValueError(f"eval_params: expected {self.n_inputs} inputs, got "
                             f"{xv.shape[0]}")
        self._enter("eval_params")
        try:
            return self.c_eval(&th[0] if self.n_params else NULL,
                               &xv[0] if self.n_inputs else NULL)
        finally:
            self._busy = False

    def _fd_evaluator(self, x):
        """num_grad/gradcheck protocol (fastgrad._numgrad): output 0 as a
        function of the input vector ``x``, evaluated in C."""
        cdef _FDInputs ev = _FDInputs.__new__(_FDInputs, _TOKEN)
        ev.x = _fd_vector(x, self.n_inputs, "inputs")
        ev.prog = self
        ev.vs, ev.vb = _init_scratch(ev, self)
        return ev

    def wrt_params(self, x):
        """Output 0 at the fixed input ``x`` as a function of the parameters.

        For ``fastgrad.num_grad(prog.wrt_params(x), theta)`` and
        ``gradcheck``: the finite-difference loop runs in C.

        Examples
        --------
        >>> import numpy as np, fastgrad
        >>> w = fastgrad.Value(3.0)
        >>> prog = fastgrad.compile(lambda v: v[0] * w * w, 1, params=[w])
        >>> round(float(fastgrad.num_grad(prog.wrt_params([2.0]), np.array([3.0]))[0]), 6)
        12.0
        """
        return _WrtParams(_TOKEN, self, self._vector(x, "wrt_params")[0].reshape(-1))

    def param_values(self):
        """The parameters' current .data as a float64 array."""
        return np.array([(<Value>p).data for p in self._params], np.float64)


# ---------------------------------------------------------------------------
# the demo's training step (fastgrad.compiled.make_demo_step)
# ---------------------------------------------------------------------------

cdef inline void _load_pack(tuple ps, Py_ssize_t lo, Py_ssize_t hi, double* vs,
                            double* pw, const int* pwp, const int* wtp) noexcept:
    """Parameters lo .. hi - 1: .data into vs and into their places in the
    packed panels (see _ParamMap)."""
    cdef Py_ssize_t i
    cdef int q
    cdef double d
    for i in range(lo, hi):
        # a borrowed reference, as in _load_params
        d = (<Value>PyTuple_GET_ITEM(ps, i)).data
        vs[i] = d
        q = pwp[i]
        if q >= 0:
            pw[q] = d
            q = wtp[i]
            if q >= 0:
                pw[q] = d


cdef extern from "Python.h":
    # PyTuple_GET_ITEM on a borrowed pointer (no reference taken for it)
    PyObject* _tuple_item "PyTuple_GET_ITEM" (PyObject* t, Py_ssize_t i) noexcept


cdef extern from *:
    """
    /* a hint that the line at p will be written soon (no-op elsewhere) */
    #if defined(__GNUC__)
    #define fg_prefetch_w(p) __builtin_prefetch((const void*)(p), 1, 3)
    #else
    #define fg_prefetch_w(p) ((void)(p))
    #endif
    """
    void fg_prefetch_w(const void* p) noexcept nogil


# The SGD store's parameters ahead of the one it updates whose .data/.grad
# line it asks for (a Value is its own allocation: each one a cache miss at
# large sizes, a few in flight without the hint).  0: none.
cdef Py_ssize_t STORE_AHEAD = 8


def _set_store_ahead(Py_ssize_t k):
    """Tuning hook: the SGD store's prefetch distance; returns the old one."""
    global STORE_AHEAD
    old = STORE_AHEAD
    STORE_AHEAD = max(k, 0)
    return old


cdef struct _SgdStore:
    # what _sgd_store_one reads (Program._store_sgd fills it)
    PyObject* ps                  # the parameters (a tuple, borrowed)
    const double* gs
    double* vs
    double* pw
    const int* pwp
    const int* wtp
    const double* lsum
    const int* lsp
    const unsigned char* slow
    double gp, lr
    Py_ssize_t lo, hi             # the penalty chain's squares (gradients)
    Py_ssize_t n, ahead           # parameters; prefetch distance (STORE_AHEAD)


cdef inline double _sgd_store_one(const _SgdStore* S, Py_ssize_t i, bint keep) noexcept:
    """Parameter i of a fused SGD store: its gradient (as the generic path
    adds it up), .grad, .data -= lr * grad, and with ``keep`` (a constant
    at each call) the new value into vs and the packed panels; returns it."""
    cdef double g, ga, d
    cdef int q
    cdef PyObject* p
    if i + S.ahead < S.n:
        fg_prefetch_w(&(<Value>_tuple_item(S.ps, i + S.ahead)).data)
    if S.slow[i]:
        g = S.gs[i]
    else:
        g = 0.0
        q = S.lsp[i]
        if q >= 0:
            g = g + S.lsum[q]
        if S.lo <= i < S.hi:
            # backward_scalar's OP_SDOT square: two adds, in order
            ga = S.vs[i] * S.gp
            g = (g + ga) + ga
    # a borrowed reference, as in _load_params
    p = _tuple_item(S.ps, i)
    (<Value>p).grad = g
    # (not -=: Cython would take a reference for it)
    d = (<Value>p).data - S.lr * g
    (<Value>p).data = d
    if keep:
        S.vs[i] = d
        q = S.pwp[i]
        if q >= 0:
            S.pw[q] = d
            q = S.wtp[i]
            if q >= 0:
                S.pw[q] = d
    return d


cdef bint _LITTLE = sys.byteorder == "little"


@cython.final
cdef class _DemoStep:
    """``step(X, y, lr) -> (loss, accuracy)`` of ``make_demo_step``.

    ``sgd_step((X, y), lr)`` on a program with inputs ``[x0, x1, y]`` and
    outputs ``[loss, score]``, plus the accuracy: the fraction of rows where
    ``(y > 0) == (score > 0)`` (before the update).  One C call: at the
    demo's size the Python around a replay (argument checks, a NumPy
    expression for the accuracy) cost as much as the replay itself.
    """
    cdef readonly Program program
    cdef readonly int num_threads
    cdef object _outs                 # (B, n_outputs) scratch of the last B
    cdef double[:, ::1] _outv

    def __cinit__(self, Program program not None, num_threads=1):
        if program.n_inputs != 3 or program.n_outputs != 2:
            raise ValueError("the demo step needs a program with 3 inputs "
                             "(x0, x1, y) and 2 outputs (loss, score), got "
                             f"{program.n_inputs} and {program.n_outputs}")
        self.program = program
        self.num_threads = _threads(num_threads, "make_demo_step")

    def __reduce__(self):
        raise TypeError("a demo step cannot be pickled; make it again")

    def __call__(self, X, y, lr):
        cdef Sources S
        cdef Py_buffer bx, by
        cdef double step = _learning_rate(lr, "demo step")
        # the usual call, C-contiguous float64 X (B, 2) and y (B,): their
        # buffers are all the checks (as NumPy gives them: format "d")
        if (type(X) is np.ndarray and type(y) is np.ndarray
                and _try_buffer(X, &bx)):
            try:
                if _try_buffer(y, &by):
                    try:
                        if (bx.ndim == 2 and by.ndim == 1 and bx.shape[1] == 2
                                and by.shape[0] == bx.shape[0] and bx.shape[0] > 0
                                and _is_f64(bx.format) and _is_f64(by.format)):
                            return self._step(<const double*>bx.buf,
                                              <const double*>by.buf, bx.shape[0], step)
                    finally:
                        PyBuffer_Release(&by)
            finally:
                PyBuffer_Release(&bx)
        return self._checked(X, y, step)

    cdef object _checked(self, X, y, double step):
        """Any other input: converted (or a clear error), then ``_step``."""
        cdef const double[:, ::1] xv
        cdef const double[::1] yv
        X = np.asarray(X)
        y = np.asarray(y)
        if X.ndim != 2 or X.shape[1] != 2 or y.shape != (X.shape[0],):
            raise ValueError("demo step: expected X of shape (B, 2) and y of "
                             f"shape (B,), got {X.shape} and {y.shape}")
        if X.shape[0] == 0:
            raise ValueError("demo step: empty batch (0 rows)")
        xv = _as_matrix(X, "demo step")
        yv = _as_matrix(y, "demo step").reshape(-1)
        return self._step(&xv[0, 0], &yv[0], xv.shape[0], step)

    cdef object _step(self, const double* X, const double* y, Py_ssize_t B,
                      double step):
        cdef Program p = self.program
        cdef Sources S
        cdef double loss
        cdef Py_ssize_t j, hits = 0
        S.n = 2
        S.ptr[0] = X
        S.cols[0] = 2
        S.ptr[1] = y
        S.cols[1] = 1
        p._enter("demo step")
        try:
            if self._outs is None or self._outv.shape[0] != B:
                self._outs = np.empty((B, 2), np.float64)
                self._outv = self._outs
            p._sgd = True
            loss = p._run_src(&S, B, 1, True, False, True, self._outv, None,
                              self.num_threads)
            p._sgd = False
            p._store_sgd(step)
            # the accuracy, as np.mean((y > 0) == (score > 0)) gives it
            for j in range(B):
                hits += (y[j] > 0.0) == (self._outv[j, 1] > 0.0)
        finally:
            p._sgd = False
            p._fmap = None
            p._busy = False
        return loss, hits / <double>B


cdef extern from "Python.h":
    int _get_buffer "PyObject_GetBuffer" (object obj, Py_buffer* view,
                                          int flags) noexcept
    void PyErr_Clear() noexcept


cdef inline bint _try_buffer(obj, Py_buffer* view) noexcept:
    """A C-contiguous buffer with its format, or False (no error set)."""
    if _get_buffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) == 0:
        return True
    PyErr_Clear()
    return False


cdef inline bint _is_f64(const char* fmt) noexcept:
    """A buffer format of native float64 ("d", "=d", "@d", or "<d" here)."""
    if fmt == NULL:
        return False
    if fmt[0] == b"@" or fmt[0] == b"=" or (fmt[0] == b"<" and _LITTLE):
        fmt += 1
    return fmt[0] == b"d" and fmt[1] == 0

"""The Triton kernels of the dual-flow attention: a forward, and a backward in two kernels (dq, dk/dv).

One program handles one block of ``BLOCK_M`` query rows (or ``BLOCK_N`` key rows) of one user
and one head, straight on the jagged ``[T, H, d]`` values. It walks the same user's blocks on
the other side and skips those whose order keys its own block cannot see (from the block
tables' key ranges, :mod:`dfgr_torchrec.ops.triton.blocks`); inside a visited block the exact
visibility ``kv_key < q_key`` (``STRICT``) or ``<=`` is applied per pair. ``HAS_SELF`` adds each
query's own key/value, always visible. ``SOFTMAX`` runs an online softmax (running max and
denominator); otherwise the pointwise form ``SiLU(s) * scale``. Accumulation is in fp32 whatever
the input dtype.

Written to run both on a GPU and under ``TRITON_INTERPRET=1`` on CPU: no CUDA-only asserts, no
autotuning against a driver; block sizes are the caller's.
"""

import triton
import triton.language as tl


@triton.jit
def _silu_grad(s):
    sig = tl.sigmoid(s)
    return sig * (1.0 + s * (1.0 - sig))


@triton.jit
def _sees(kv_key, q_key, STRICT: tl.constexpr):
    if STRICT:
        return kv_key < q_key
    else:
        return kv_key <= q_key


@triton.jit
def _rows(ptr, rows, row_ok, h, stride_t, stride_h, cols, n_cols):
    """A ``[len(rows), len(cols)]`` tile of head ``h`` (zeros outside the valid rows/columns)."""
    mask = row_ok[:, None] & (cols[None, :] < n_cols)
    return tl.load(ptr + rows[:, None] * stride_t + h * stride_h + cols[None, :], mask=mask, other=0.0)


@triton.jit
def _store_rows(ptr, value, rows, row_ok, h, stride_t, stride_h, cols, n_cols):
    mask = row_ok[:, None] & (cols[None, :] < n_cols)
    tl.store(ptr + rows[:, None] * stride_t + h * stride_h + cols[None, :], value.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _query_block(pid, q_start, q_end, q_user, q_key_max, Q, Q_KEYS, h, stride_qt, stride_qh, dd, D,
                 BLOCK_M: tl.constexpr):
    """Query block ``pid`` of the block table: its user, largest key, rows, row mask, queries and keys."""
    rows = tl.load(q_start + pid) + tl.arange(0, BLOCK_M)
    row_ok = rows < tl.load(q_end + pid)
    q = _rows(Q, rows, row_ok, h, stride_qt, stride_qh, dd, D)
    q_key = tl.load(Q_KEYS + rows, mask=row_ok, other=0)
    return tl.load(q_user + pid), tl.load(q_key_max + pid), rows, row_ok, q, q_key


@triton.jit
def _key_block(j, kv_start, kv_end, K, V, KV_KEYS, h, stride_kt, stride_kh, stride_vt, stride_vh, dd, dv, D, DV,
               row_ok, q_key, STRICT: tl.constexpr, BLOCK_N: tl.constexpr):
    """Key block ``j``: its keys, values, and which (query row, key) pairs of the tile are visible."""
    cols = tl.load(kv_start + j) + tl.arange(0, BLOCK_N)
    col_ok = cols < tl.load(kv_end + j)
    k = _rows(K, cols, col_ok, h, stride_kt, stride_kh, dd, D)
    v = _rows(V, cols, col_ok, h, stride_vt, stride_vh, dv, DV)
    kv_key = tl.load(KV_KEYS + cols, mask=col_ok, other=0)
    return k, v, row_ok[:, None] & col_ok[None, :] & _sees(kv_key[None, :], q_key[:, None], STRICT)


@triton.jit
def _fwd_tile(q, k, v, visible, m, l, acc, SOFTMAX: tl.constexpr, PRECISION: tl.constexpr):
    """One key block into the running ``(max, denominator, accumulator)`` of a query block."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
    if SOFTMAX:
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that has seen nothing yet
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m - m_safe)
        l = l * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m = m_new
    else:
        a = tl.where(visible, s * tl.sigmoid(s), 0.0)
        acc += tl.dot(a.to(v.dtype), v, input_precision=PRECISION)
    return m, l, acc


@triton.jit
def _self_term_grads(q, do, lse, delta, row_ok, SK, SV, DSK, DSV, rows, h, stride_skt, stride_skh, stride_svt,
                     stride_svh, num_heads, scale, dd, dv, D, DV, SOFTMAX: tl.constexpr):
    """Stores ``d self_k``, ``d self_v`` of a query block; returns the self term's share of ``dq``."""
    self_k = _rows(SK, rows, row_ok, h, stride_skt, stride_skh, dd, D).to(tl.float32)
    self_v = _rows(SV, rows, row_ok, h, stride_svt, stride_svh, dv, DV).to(tl.float32)
    qf, dof = q.to(tl.float32), do.to(tl.float32)
    s_self = tl.sum(qf * self_k, 1)
    g_self = tl.sum(dof * self_v, 1)
    if SOFTMAX:
        p_self = tl.where(row_ok, tl.exp(s_self - lse), 0.0)
        d_self_v = p_self[:, None] * dof
        ds_self = p_self * (g_self - delta)
    else:
        d_self_v = (scale * s_self * tl.sigmoid(s_self))[:, None] * dof
        ds_self = scale * g_self * _silu_grad(s_self)
    _store_rows(DSK, ds_self[:, None] * qf, rows, row_ok, h, num_heads * D, D, dd, D)
    _store_rows(DSV, d_self_v, rows, row_ok, h, num_heads * DV, DV, dv, DV)
    return ds_self[:, None] * self_k


@triton.jit
def attention_fwd(
    Q, K, V, SK, SV, O, LSE, Q_KEYS, KV_KEYS,
    q_start, q_end, q_user, q_key_max,
    kv_user_blocks, kv_start, kv_end, kv_key_min,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    stride_skt, stride_skh, stride_svt, stride_svh, stride_ot, stride_oh,
    num_heads, scale, D, DV,
    STRICT: tl.constexpr, SOFTMAX: tl.constexpr, HAS_SELF: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    h = tl.program_id(1)
    dd = tl.arange(0, BLOCK_D)
    dv = tl.arange(0, BLOCK_DV)
    user, q_max, rows, row_ok, q, q_key = _query_block(
        tl.program_id(0), q_start, q_end, q_user, q_key_max, Q, Q_KEYS, h, stride_qt, stride_qh, dd, D, BLOCK_M
    )

    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    if HAS_SELF:  # the own key/value starts the accumulators: always visible
        self_k = _rows(SK, rows, row_ok, h, stride_skt, stride_skh, dd, D)
        self_v = _rows(SV, rows, row_ok, h, stride_svt, stride_svh, dv, DV).to(tl.float32)
        s_self = tl.sum(q.to(tl.float32) * self_k.to(tl.float32), 1)
        if SOFTMAX:
            m = s_self
            l = tl.full([BLOCK_M], 1.0, tl.float32)
            acc = self_v
        else:
            acc = (s_self * tl.sigmoid(s_self))[:, None] * self_v

    for j in range(tl.load(kv_user_blocks + user), tl.load(kv_user_blocks + user + 1)):
        if _sees(tl.load(kv_key_min + j), q_max, STRICT):
            k, v, visible = _key_block(j, kv_start, kv_end, K, V, KV_KEYS, h, stride_kt, stride_kh, stride_vt,
                                       stride_vh, dd, dv, D, DV, row_ok, q_key, STRICT, BLOCK_N)
            m, l, acc = _fwd_tile(q, k, v, visible, m, l, acc, SOFTMAX, PRECISION)

    if SOFTMAX:
        seen = l > 0
        out = acc / tl.where(seen, l, 1.0)[:, None]
        # a row that sees nothing stores 0: its output is 0 and the backward's P is masked to 0
        tl.store(LSE + rows * num_heads + h, tl.where(seen, m + tl.log(tl.where(seen, l, 1.0)), 0.0), mask=row_ok)
    else:
        out = acc * scale
    _store_rows(O, out, rows, row_ok, h, stride_ot, stride_oh, dv, DV)


@triton.jit
def attention_bwd_dq(
    Q, K, V, SK, SV, DO, LSE, DELTA, Q_KEYS, KV_KEYS, DQ, DSK, DSV,
    q_start, q_end, q_user, q_key_max,
    kv_user_blocks, kv_start, kv_end, kv_key_min,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
    stride_skt, stride_skh, stride_svt, stride_svh, stride_dot, stride_doh,
    num_heads, scale, D, DV,
    STRICT: tl.constexpr, SOFTMAX: tl.constexpr, HAS_SELF: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """``dq`` per query block (and the self term's ``d self_k``, ``d self_v``); ``DQ``/``DSK``/``DSV`` contiguous."""
    h = tl.program_id(1)
    dd = tl.arange(0, BLOCK_D)
    dv = tl.arange(0, BLOCK_DV)
    user, q_max, rows, row_ok, q, q_key = _query_block(
        tl.program_id(0), q_start, q_end, q_user, q_key_max, Q, Q_KEYS, h, stride_qt, stride_qh, dd, D, BLOCK_M
    )
    do = _rows(DO, rows, row_ok, h, stride_dot, stride_doh, dv, DV)
    lse = tl.zeros([BLOCK_M], tl.float32)
    delta = tl.zeros([BLOCK_M], tl.float32)
    if SOFTMAX:
        lse = tl.load(LSE + rows * num_heads + h, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + rows * num_heads + h, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    for j in range(tl.load(kv_user_blocks + user), tl.load(kv_user_blocks + user + 1)):
        if _sees(tl.load(kv_key_min + j), q_max, STRICT):
            k, v, visible = _key_block(j, kv_start, kv_end, K, V, KV_KEYS, h, stride_kt, stride_kh, stride_vt,
                                       stride_vh, dd, dv, D, DV, row_ok, q_key, STRICT, BLOCK_N)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
            if SOFTMAX:
                p = tl.where(visible, tl.exp(s - lse[:, None]), 0.0)
                ds = p * (dp - delta[:, None])
            else:
                ds = tl.where(visible, dp * _silu_grad(s), 0.0) * scale
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)

    if HAS_SELF:
        dq += _self_term_grads(q, do, lse, delta, row_ok, SK, SV, DSK, DSV, rows, h, stride_skt, stride_skh,
                               stride_svt, stride_svh, num_heads, scale, dd, dv, D, DV, SOFTMAX)
    _store_rows(DQ, dq, rows, row_ok, h, num_heads * D, D, dd, D)


@triton.jit
def attention_bwd_dkdv(
    Q, K, V, DO, LSE, DELTA, Q_KEYS, KV_KEYS, DK, DV,
    kv_start, kv_end, kv_user, kv_key_min,
    q_user_blocks, q_start, q_end, q_key_max,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    num_heads, scale, D, DVD,
    STRICT: tl.constexpr, SOFTMAX: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """``dk``, ``dv`` per key block, over the query blocks of the same user that can see it."""
    pid = tl.program_id(0)
    h = tl.program_id(1)
    ks = tl.load(kv_start + pid)
    user = tl.load(kv_user + pid)
    k_min = tl.load(kv_key_min + pid)
    cols = ks + tl.arange(0, BLOCK_N)
    col_ok = cols < tl.load(kv_end + pid)
    dd = tl.arange(0, BLOCK_D)
    dv_cols = tl.arange(0, BLOCK_DV)
    k = _rows(K, cols, col_ok, h, stride_kt, stride_kh, dd, D)
    v = _rows(V, cols, col_ok, h, stride_vt, stride_vh, dv_cols, DVD)
    kv_key = tl.load(KV_KEYS + cols, mask=col_ok, other=0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)

    for i in range(tl.load(q_user_blocks + user), tl.load(q_user_blocks + user + 1)):
        if _sees(k_min, tl.load(q_key_max + i), STRICT):
            rows = tl.load(q_start + i) + tl.arange(0, BLOCK_M)
            row_ok = rows < tl.load(q_end + i)
            q = _rows(Q, rows, row_ok, h, stride_qt, stride_qh, dd, D)
            do = _rows(DO, rows, row_ok, h, stride_dot, stride_doh, dv_cols, DVD)
            q_key = tl.load(Q_KEYS + rows, mask=row_ok, other=0)
            visible = row_ok[:, None] & col_ok[None, :] & _sees(kv_key[None, :], q_key[:, None], STRICT)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
            if SOFTMAX:
                lse = tl.load(LSE + rows * num_heads + h, mask=row_ok, other=0.0)
                delta = tl.load(DELTA + rows * num_heads + h, mask=row_ok, other=0.0)
                a = tl.where(visible, tl.exp(s - lse[:, None]), 0.0)
                ds = a * (dp - delta[:, None])
            else:
                a = tl.where(visible, s * tl.sigmoid(s), 0.0) * scale
                ds = tl.where(visible, dp * _silu_grad(s), 0.0) * scale
            dv += tl.dot(tl.trans(a.to(do.dtype)), do, input_precision=PRECISION)
            dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)

    _store_rows(DK, dk, cols, col_ok, h, num_heads * D, D, dd, D)
    _store_rows(DV, dv, cols, col_ok, h, num_heads * DVD, DVD, dv_cols, DVD)

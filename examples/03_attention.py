"""Chapter 3. Attention: one head by hand in NumPy, then the fused op, checked against each other.

Run:  python examples/03_attention.py                  (a second)
      python examples/03_attention.py --tokens 12 --n-head 4

Source: npllm/functional/attention.py (the composed definition, then the fused op with
its hand-derived backward), npllm/nn/attention.py (multi-head attention, the KV cache,
recording the weights).

1. One head by hand: each position's query is scored against every key, the future is
   masked, a softmax turns the scores into weights, and the output mixes the values.
2. The fused op (F.scaled_dot_product_attention) gives the same output.
3. Its hand-written backward gives the same gradients as autograd through the
   composed definition, and central differences prove both (float64).
4. A multi-head layer: the C channels cut into H heads of D; the weights each head
   computes, recorded with npllm.nn.recording_attention, are exactly the by-hand ones.
5. The KV cache: feeding the tokens one by one, keeping old keys and values, gives the
   same outputs as the whole sequence at once.
6. A picture of the heads' weights (attention.png, with matplotlib).
"""

import argparse

import numpy as np

import npllm.functional as F
from npllm import Tensor, gradcheck, no_grad
from npllm.functional.attention import attention_composed
from npllm.nn import MultiHeadAttention, recording_attention
from npllm.plot import picture
from npllm.plot.attention import plot_attention


def one_head_by_hand(x, w_q, w_k, w_v):
    """x (T, C) and three (C, D) projections -> (output (T, D), weights (T, T)): the formula, line by line."""
    q, k, v = x @ w_q, x @ w_k, x @ w_v                   # (T, D) each: what I look for, what I offer, what I give
    scores = q @ k.T / np.sqrt(q.shape[1])                # (T, T): scores[i, j] = q_i . k_j / sqrt(D)
    scores[np.triu_indices(len(x), k=1)] = -np.inf        # position i may not read j > i (the future)
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)         # each row a softmax: sums to 1
    return weights @ v, weights                           # (T, D): each output a weighted mix of the values


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=8, help="sequence length T")
    parser.add_argument("--n-embd", type=int, default=16, help="channels C")
    parser.add_argument("--n-head", type=int, default=2, help="heads H (must divide --n-embd)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/textbook/03-attention", help="folder for the chapter's picture")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    T, C, H = args.tokens, args.n_embd, args.n_head
    D = C // H

    x = rng.standard_normal((T, C))
    w_q, w_k, w_v = (rng.standard_normal((C, D)) / np.sqrt(C) for _ in range(3))
    by_hand, weights = one_head_by_hand(x, w_q, w_k, w_v)
    print(f"1. one head by hand: T {T}, D {D}; row 3 of the weights (position 3 reads 0..3):"
          f" {np.round(weights[3], 3).tolist()}, sum {weights[3].sum():.6f}")

    q, k, v = (Tensor((x @ w)[None, None], requires_grad=True) for w in (w_q, w_k, w_v))  # (1, 1, T, D)
    fused = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    print(f"2. fused op: largest difference from the hand-written head {np.abs(fused.data[0, 0] - by_hand).max():.1e}")

    upstream = rng.standard_normal(fused.shape)  # any gradient arriving from the layers above
    fused.backward(upstream)
    fused_grads = [t.grad.copy() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    attention_composed(q, k, v, is_causal=True).backward(upstream)
    largest = max(np.abs(a - t.grad).max() for a, t in zip(fused_grads, (q, k, v)))
    proven = gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), [q, k, v])
    print(f"3. backward: fused dq, dk, dv vs autograd through the composed formula: {largest:.1e};"
          f" gradcheck of the fused op: {proven}")

    layer = MultiHeadAttention(C, H, dtype=np.float64, rng=rng)
    with no_grad(), recording_attention(layer) as recorded:
        full = layer(Tensor(x[None])).data
    q_all, k_all, v_all = np.split(layer.c_attn(Tensor(x[None])).data[0], 3, axis=-1)  # (T, C) each
    per_head = [one_head_by_hand(np.eye(T), q_all[:, h * D:(h + 1) * D], k_all[:, h * D:(h + 1) * D],
                                 v_all[:, h * D:(h + 1) * D])[1] for h in range(H)]  # identity x: the projections
    print(f"4. {H} heads of {D} channels: recorded weights vs each head by hand"
          f" {np.abs(recorded[''][0] - np.stack(per_head)).max():.1e}")

    cache = layer.new_kv_cache(batch_size=1, capacity=T)
    with no_grad():
        stepwise = np.concatenate([layer(Tensor(x[None, t:t + 1]), kv_cache=cache).data for t in range(T)], axis=1)
    print(f"5. KV cache, one token at a time vs all at once: {np.abs(stepwise - full).max():.1e}"
          f" ({cache.length} keys and values cached)")

    picture(f"{args.out}/attention.png", plot_attention, {"random layer": recorded[""][0]},
            [f"x{t}" for t in range(T)], title="causal attention weights of a random layer")
    return {"hand_vs_fused": float(np.abs(fused.data[0, 0] - by_hand).max()), "gradients": float(largest),
            "gradcheck": proven, "cache": float(np.abs(stepwise - full).max())}


if __name__ == "__main__":
    main()

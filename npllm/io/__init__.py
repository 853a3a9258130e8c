"""Files written so that a crash never leaves half of one: atomic writes, and the safetensors layout in NumPy.

- ``atomic``: write to a temporary file, flush, then rename over the target;
- ``safetensors``: the format Hugging Face publishes weights in, read and written by hand;
- ``checksums``: a file's SHA-256, to know it is the one written (or downloaded).

Independent of autograd: arrays and bytes only.
"""

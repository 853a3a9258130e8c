"""Files written so that a crash never leaves half of one: atomic writes, and the safetensors layout in NumPy.

- ``atomic``: write to a temporary file, flush, then rename over the target;
- ``safetensors``: the format Hugging Face publishes weights in, read and written by hand.

Independent of autograd: arrays and bytes only.
"""

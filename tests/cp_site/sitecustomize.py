"""On ``PYTHONPATH`` for test_context_parallel.py's ``torchrun -m sorakit worker`` only.

diffusers 0.42.1 places rank r on device ``r % torch.accelerator.device_count()``: on a CPU-only
torch that divides by zero. With SORAKIT_TEST_ONE_DEVICE=1 the processes report one device, so every
rank is placed on the CPU; nothing else changes (the collectives run on gloo).
"""

import os

if os.environ.get("SORAKIT_TEST_ONE_DEVICE") == "1":
    import torch

    torch.accelerator.device_count = lambda: 1

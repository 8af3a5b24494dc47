"""sampler's command line: Typer outside, the real `hydra.main` inside (DESIGN §2)."""
# The first sampler code in the CLI and in launcher workers: `import torch` is timed
# here, so that time/startup_import_torch_s is exact (train/env.py).
import sys
import time

from .errors import interrupted  # noqa: E402  (torch-free)

_start, _had_torch = time.perf_counter(), "torch" in sys.modules
try:
    import torch  # noqa: E402,F401
except KeyboardInterrupt:  # Ctrl-C in the 2-3 s torch takes to load: nothing has started
    interrupted(loading=True)

if not _had_torch:
    from sampler.experiments.train.env import note_torch_import

    note_torch_import(time.perf_counter() - _start)

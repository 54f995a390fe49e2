"""Python's cyclic garbage collector paused while a run starts up.

Start-up creates hundreds of thousands of objects that live as long as the
process (the modules of jax, flax, optax and TensorFlow; the traced and
lowered train step) and next to no cyclic garbage. The collector still
walks them, again and again as they grow: on 2 cores (2026-12-05,
benchmarks/README.md, "Start-up"), importing jax, aisci and TensorFlow took
2.0 s with it paused against 2.8 s with it running, and building and
tracing ViT tiny's init and train step 0.3-0.4 s less.

`python -m aisci.main` calls `pause()` first thing and the train loop
`resume()` once the train step is compiled. Resuming moves every object
then alive into the permanent generation (`gc.freeze`, the pattern the
`gc` documentation gives for long-lived start-up state), so later
collections during training skip them too, and turns collection back on.
The price: cyclic garbage made during start-up is never collected (~1,700
objects for ViT tiny). `AISCI_GC_PAUSE=0` leaves the collector alone.
"""

import gc
import os

OPT_OUT = 'AISCI_GC_PAUSE'  # =0: never pause

_paused = False


def pause() -> bool:
  """Turns the collector off, unless opted out or already off; whether it
  did (only then does `resume` turn it back on)."""
  global _paused
  if os.environ.get(OPT_OUT, '1') == '0' or not gc.isenabled():
    return False
  gc.disable()
  _paused = True
  return True


def resume() -> int:
  """After `pause`: freezes what is alive and turns the collector back on;
  the number of objects frozen. A no-op (0) when nothing was paused, as in
  a test or notebook that calls the loop directly."""
  global _paused
  if not _paused:
    return 0
  _paused = False
  gc.freeze()
  gc.enable()
  return gc.get_freeze_count()

"""Progress lines of long phases: count, rate and ETA at the right times."""

from aisci.train import progress


class FakeClock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def _run(items, seconds_per_item, **kwargs):
  clock, lines = FakeClock(), []
  for _ in progress.track(items, log=lines.append, clock=clock, **kwargs):
    clock.now += seconds_per_item
  return lines


def test_track_logs_count_rate_and_eta_then_a_summary():
  # 100 batches of 50 images, 0.5 s each: lines at 10 s, then every 30 s.
  lines = _run([list(range(50))] * 100, 0.5, total=5000, what='Decoding',
               unit='images', size=len)
  assert lines == [
      'Decoding: 1,000/5,000 images (20%) | 100 images/s | ETA 0:40',
      'Decoding: 4,000/5,000 images (80%) | 100 images/s | ETA 0:10',
      'Decoding: 5,000 images in 0:50 (100 images/s)',
  ]


def test_track_is_silent_for_short_loops_and_passes_items_through():
  clock, lines = FakeClock(), []
  out = list(progress.track(range(5), 5, 'Evaluating', log=lines.append,
                            clock=clock))
  assert out == [0, 1, 2, 3, 4] and lines == []
  # Unknown length: count and rate only.
  lines = _run(range(30), 1.0, total=-1, what='Reading', unit='files')
  assert lines[0] == 'Reading: 10 files | 1 files/s'
  # Slow loops: the rate keeps two digits rather than reading 0.
  lines = _run(range(10), 4.0, total=10, what='Evaluating', unit='batches')
  assert lines == ['Evaluating: 3/10 batches (30%) | 0.25 batches/s | ETA 0:28',
                   'Evaluating: 10 batches in 0:40 (0.25 batches/s)']


def test_timings_count_training_only():
  clock = FakeClock()
  p = progress.Progress(total_steps=100, global_batch_size=32, start_step=20,
                        clock=clock)
  clock.now = 10.0
  p.line(40, {})
  p.pause()
  clock.now = 25.0  # 15 s of evaluation
  p.resume()
  clock.now = 35.0
  p.line(60, {})
  clock.now = 40.0  # final evaluation, after the last line
  t = p.timings()
  assert t['wall_seconds'] == 40.0 and t['train_seconds'] == 20.0
  assert t['steps'] == 40 and t['steps_per_second'] == 2.0
  assert t['examples_per_second'] == 64.0


def test_flop_rate_and_mfu_in_the_line_and_timings():
  clock = FakeClock()
  p = progress.Progress(total_steps=100, global_batch_size=32, start_step=0,
                        clock=clock)
  # 2 TFLOP per step over 4 devices of 1 TFLOP/s each, 1 step/s: half.
  p.set_flops(2e12, devices=4, peak_tflops_per_device=1.0)
  clock.now = 10.0
  line = p.line(10, {'loss': 1.0})
  assert '| 32 ex/s | 2 TFLOP/s | MFU 50.0% | ETA 1:30' in line, line
  t = p.timings()
  assert t['tflops_per_second'] == 2.0 and t['mfu'] == 0.5
  # No peak known (a CPU): the rate alone.
  p.set_flops(2e12, devices=4, peak_tflops_per_device=None)
  clock.now = 20.0
  line = p.line(20, {'loss': 1.0})
  assert '| 2 TFLOP/s | ETA' in line and 'MFU' not in line, line
  assert 'mfu' not in p.timings()


def test_no_flops_no_rate():
  clock = FakeClock()
  p = progress.Progress(total_steps=100, global_batch_size=32, start_step=0,
                        clock=clock)
  clock.now = 10.0
  assert 'FLOP' not in p.line(10, {})
  assert 'tflops_per_second' not in p.timings()

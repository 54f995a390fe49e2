"""Reports a person reads: WORKDIR/report.md and PNGs after training.

    report.write_all(workdir, config=..., task=..., class_names=...,
                     scalars=..., report=..., step=...)   # the loop calls this
    report.overlay_grid(images, true_masks, pred_masks, 'overlays.png')

plots.py draws (headless matplotlib), report_md.py writes the Markdown,
examples.py keeps a few evaluation examples with the final evaluation's
outputs, write.py ties them together.
"""

from aisci.report.examples import ExampleCollector
from aisci.report.plots import confusion_matrix
from aisci.report.plots import curves
from aisci.report.plots import example_grid
from aisci.report.plots import overlay_grid
from aisci.report.write import read_metrics
from aisci.report.write import write_all

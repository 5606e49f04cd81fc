"""Cells: find every white cell in a field, cut it out at the models' scale, and count a differential.

`detect.detect_cells` locates nucleated white cells (centre, box, areas), names platelets and
debris/smudges apart so they are never counted; `crop.crop_cell` cuts a square of a given physical size
around one cell for a cell classifier; `count.differential` turns per-cell labels into counts per type,
a blast share with its 95% confidence interval and the slide call (a screening aid for trained staff,
not a diagnosis). numpy + OpenCV (+ scipy for the interval); no TensorFlow. See docs/cells.md.
"""

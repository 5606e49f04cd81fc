"""`smearscope` with every white cell's probabilities forced onto one side (tests only): all mass on the
bundle's first blast label ("blast") or first label that is not a blast ("not_blast"), then the real
`device.cells.decide`. End-to-end tests use it so a slide's call depends on the plumbing, never on a tiny
model's accuracy or a CPU's arithmetic.

    python -c "import cells_stub; cells_stub.run('blast')" run --config ...   (tests/ on sys.path)
"""

from __future__ import annotations

import sys


def force(side: str) -> None:
    import device.screening.classify as classify
    from device.cells.decide import decide

    blast = side == "blast"

    def forced(probabilities, labels, spec, *, unfamiliar=None):
        target = next(lb.id for lb in labels if bool(lb.malignant) == blast)
        probs = {lb.id: 1.0 if lb.id == target else 0.0 for lb in labels}
        return decide(probs, labels, spec, unfamiliar=unfamiliar)

    classify.decide = forced


def run(side: str) -> None:
    force(side)
    from device.cli import main

    sys.argv[0] = "smearscope"
    raise SystemExit(main())

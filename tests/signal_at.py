"""Run a repository script as ``python SCRIPT ARGS`` would, sending this process a signal at
a chosen point inside it, for the interruption rows of tests/test_faults.py.

    PYTHONPATH=. python tests/signal_at.py POINT SIGNAL SCRIPT [ARGS...]

(from the repository root, so that the script's own modules, such as train.py's utils, import).

POINT is where the signal is sent:

* ``startup``: as soon as the script has installed its handler, before its slow imports;
* ``loader-start``: as Paddle's DataLoader has started its worker processes for an epoch;
* ``save``: between the two files of a checkpoint (``.pdopt`` written, ``.pdparams`` not);
* ``evaluation``: as an epoch's evaluation starts (its checkpoint written, its record not);
* ``epoch-end``: once an epoch's evaluation has been recorded, before the next epoch.
"""

import os
import runpy
import signal
import sys

point, signal_name, script, *args = sys.argv[1:]
signum = getattr(signal, signal_name)


def send_after(owner, name, when=lambda *a, **k: True):
    original = getattr(owner, name)

    def wrapper(*a, **k):
        result = original(*a, **k)
        if when(*a, **k):
            os.kill(os.getpid(), signum)
        return result

    setattr(owner, name, wrapper)


if point == "startup":
    from paddlevision.interrupts import Interrupts

    send_after(Interrupts, "install")
elif point == "loader-start":
    import paddle.io

    send_after(paddle.io.DataLoader, "__iter__")
elif point == "save":
    from paddlevision import checkpoint

    send_after(checkpoint, "atomic_save", when=lambda obj, path: str(path).endswith(".pdopt"))
elif point == "evaluation":
    import utils

    send_after(utils.MetricLogger, "add_meter", when=lambda self, name, meter: name == "acc5")
elif point == "epoch-end":
    import utils

    send_after(utils.MetricsWriter, "write", when=lambda self, **record: record.get("type") == "eval")
else:
    raise SystemExit(f"unknown point {point!r}")

sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")

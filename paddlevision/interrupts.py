"""Ctrl-C and SIGTERM as a clean end of a command, not a traceback or a half-written file.

    INTERRUPTS = Interrupts().install()   # first thing in a script, before its slow imports
    ...
    INTERRUPTS.release()                  # where the script starts handling KeyboardInterrupt
    with INTERRUPTS.deferred():           # a block that must not be cut short
        save_checkpoint()

A signal raises ``KeyboardInterrupt`` in the process that installed the handler, at once
or, while deferred, when the deferral ends; ``received`` says which signal it was.
Standard library only, so that installing it costs nothing.
"""

import contextlib
import os
import signal

__all__ = ["Interrupts"]


class Interrupts:
    """SIGINT and SIGTERM for one process.

    Only the process that installed the handler reacts: data-loading workers forked from
    it ignore the SIGINT a terminal sends to the whole process group, so they keep serving
    batches until the main process stops them (a killed worker would turn the interrupt
    into Paddle's "Blocking queue is killed" error), and die of SIGTERM as before. Until
    :meth:`release`, signals are held: the script's imports are not yet inside the code
    that handles them.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received = None
        self._pid = os.getpid()
        self._deferring = 1
        self._pending = False

    def install(self):
        for signum in self.SIGNALS:
            signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if os.getpid() != self._pid:
            # SIGTERM ends a forked child as if this handler were not there. (Paddle's loader
            # workers install their own; ImageLoader's worker_init_fn makes it a quiet exit.)
            if signum == signal.SIGTERM:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            return
        if self.received:  # already ending: a second Ctrl-C must not cut the clean-up short
            return
        self.received = signum
        if self._deferring:
            self._pending = True
        else:
            raise KeyboardInterrupt(signal.Signals(signum).name)

    def release(self):
        """Raise what was held since :meth:`install`, and raise at once from now on. The
        handlers are installed again: importing paddle replaces SIGTERM's with its own
        (which prints a C++ stack and aborts)."""
        self.install()
        self._deferring -= 1
        self._raise_pending()

    @contextlib.contextmanager
    def deferred(self):
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        self._raise_pending()

    def _raise_pending(self):
        if self._pending and not self._deferring:
            self._pending = False
            raise KeyboardInterrupt(signal.Signals(self.received).name)

    @property
    def exit_status(self):
        """The shell's status for a process ended by the signal: 130 for Ctrl-C."""
        return 128 + self.received

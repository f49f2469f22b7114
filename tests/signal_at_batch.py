"""Runs a recipe that sends itself a signal at a fixed point of its training.

    python tests/signal_at_batch.py EPOCH BATCH SIGNAL MODULE ARG ...

The recipe runs as `python -m MODULE ARG ...` would, with one more training callback
that sends `SIGNAL` (a number) to its own process when batch `BATCH` (0-based) of
epoch `EPOCH` (1-based) begins. A signal sent by another process lands wherever the
child happens to be (on a loaded machine, after training ended); this one lands in the
middle of that epoch every time, and is still a real signal.
"""

import os
import runpy
import signal
import sys

import keras

from recipes import cli


class SignalAtBatch(keras.callbacks.Callback):
    def __init__(self, epoch, batch, signal_number):
        super().__init__()
        self.epoch, self.batch, self.signal_number = epoch, batch, signal_number
        self.current_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.current_epoch = epoch + 1

    def on_train_batch_begin(self, batch, logs=None):
        if (self.current_epoch, batch) == (self.epoch, self.batch):
            os.kill(os.getpid(), self.signal_number)


def main():
    epoch, batch, signal_number, module, *argv = sys.argv[1:]
    # A Ctrl-C at a terminal raises KeyboardInterrupt. A test started in the background
    # (as CI may be) inherits SIGINT ignored, and Python then leaves it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    callback = SignalAtBatch(int(epoch), int(batch), int(signal_number))
    training_callbacks = cli.training_callbacks

    def with_signal(*args, **kwargs):
        return [*training_callbacks(*args, **kwargs), callback]

    cli.training_callbacks = with_signal
    sys.argv = [module, *argv]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

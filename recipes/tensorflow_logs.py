"""TensorFlow's C++ log lines, kept off the terminal of the recipe commands.

TensorFlow's C++ side writes its own lines to standard error, in absl's format: on
import (`I0000 00:00:1796689669.414934  5427 port.cc:153] oneDNN custom operations are
on ...`, `... cudart_stub.cc:31] Could not find cuda drivers on your machine ...`), at
the first TensorFlow op on a machine without a GPU (`E0000 ... cuda_platform.cc:52]
failed call to cuInit: ...`) and while optimising a graph (`E0000 ... util.cc:131]
oneDNN supports DT_BOOL only on platforms with AVX-512 ...`). They are notices, not
errors, and they bury the recipes' own output.

`quiet_tensorflow_logs`, which `recipes/__init__.py` calls before any recipe module
imports TensorFlow, sets `TF_CPP_MIN_LOG_LEVEL=3` and imports TensorFlow with the lines
it writes while loading (before its logging reads that variable) filtered out. A level
the user set is left as it is, and nothing is filtered then:
`TF_CPP_MIN_LOG_LEVEL=0 python -m recipes.translate ...` shows every line.

What still reaches the user: TensorFlow's errors, which it raises as Python exceptions
with the op's message (a traceback, or the recipes' one-line errors); its fatal lines (a
failed check, just before it aborts), which level 3 keeps; and anything else written to
standard error, Python's warnings included.
"""

import importlib
import importlib.util
import os
import subprocess
import sys

LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# Fatal lines only (0 shows info lines on, 1 warnings on, 2 errors on); 4 would hide the
# fatal line too, and a failed check would abort without a word.
QUIET_LEVEL = "3"

# What the shared libraries write while TensorFlow loads, before it reads the level: absl's
# info, warning and error lines (`I0000 00:00:1796689669.414934    5427 port.cc:153] ...`)
# and absl's notice that it logs to standard error until initialised. Fatal (`F`) lines
# and all else go through.
LOADING_NOISE = (
    r"[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\s]+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
)

# The filter, run in a Python of its own: it outlives an abort during the import (and
# writes what TensorFlow printed before it), which a thread of this process would not.
FILTER_SOURCE = """
import re
import sys

noise = re.compile(sys.argv[1].encode())
for line in sys.stdin.buffer:
    if not noise.match(line):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
"""


def quiet_tensorflow_logs():
    """Sets `TF_CPP_MIN_LOG_LEVEL=3` and imports TensorFlow without its loading notices.

    Does nothing when the user set `TF_CPP_MIN_LOG_LEVEL` (their level is kept, and
    TensorFlow prints what it prints at that level), when TensorFlow is already imported
    (it has read the level, and printed its loading lines), or when it is not installed
    (the import that needs it names what is missing).
    """
    if LEVEL_VARIABLE in os.environ or "tensorflow" in sys.modules:
        return
    if importlib.util.find_spec("tensorflow") is None:
        return
    os.environ[LEVEL_VARIABLE] = QUIET_LEVEL
    import_filtered("tensorflow")


def import_filtered(module_name, noise=LOADING_NOISE):
    """Imports `module_name` with the lines its import writes to standard error filtered.

    Standard error (file descriptor 2, which C++ code writes to) goes through a pipe to a
    filter process that drops the lines matching the regular expression `noise` (matched
    at the start of a line) and passes on the others, in order, to the real
    standard error. Once the import ends (or fails: its exception then prints as usual),
    standard error is restored and the filter has written everything.

    Args:
        module_name: The module to import.
        noise: A regular expression of the lines to drop (ASCII).

    Returns:
        The imported module.
    """
    try:
        saved_stderr = os.dup(2)
    except OSError:  # no standard error to filter
        return importlib.import_module(module_name)
    sys.stderr.flush()  # what Python holds goes out before, unfiltered
    read_end, write_end = os.pipe()
    try:
        filter_process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", FILTER_SOURCE, noise],
            stdin=read_end,
            stdout=saved_stderr,
            stderr=saved_stderr,
            # Its own session: Ctrl-C during the import stops this process, not the filter,
            # which ends when the pipe closes.
            start_new_session=True,
        )
    except OSError:  # no Python to run it: the import, unfiltered
        for descriptor in (read_end, write_end, saved_stderr):
            os.close(descriptor)
        return importlib.import_module(module_name)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        return importlib.import_module(module_name)
    finally:
        sys.stderr.flush()
        os.dup2(saved_stderr, 2)  # closes the pipe's last write end: the filter ends
        os.close(saved_stderr)
        try:
            filter_process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a process the import started holds the pipe
            pass  # the filter ends with it

"""Test-session set-up that must happen before any test module (or the package) is imported.

Triton decides at a kernel's decoration whether it runs compiled or under its CPU interpreter, so
``TRITON_INTERPRET=1`` is set here, before collection imports anything that may load the kernels
(CI has no GPU: the Triton backend's tests run under the interpreter). Subprocesses that must not
interpret (the GPU check's CPU exit path) remove it from their own environment.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

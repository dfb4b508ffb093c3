"""An app that imports in the coordinator but fails in worker processes (a missing secret, a
module only installed on the wrong machine...)."""

from __future__ import annotations

import multiprocessing

from swf_pool import Registry

if multiprocessing.parent_process() is not None:
    raise ImportError("this app cannot load inside a worker process")

registry = Registry()
registry.register("t.never", lambda run: None)

"""What the worker server imports before it forks any worker (see core/workers.py).

The imports create about 180,000 long-lived objects. Without care, the garbage collector
walks all of them again and again: during the imports (about 0.3 s measured), and then in
every forked worker, where each full collection also writes to every object's header and
so copies the server's memory page by page into the worker. So collection is off while
importing, and the imported objects are then frozen: collections in the workers look
only at what the workers allocate themselves (the documented use of ``gc.freeze`` before
``fork``).
"""

import gc

gc.disable()
try:
    import segmentation_pipeline.core.model_search  # noqa: F401 - the scikit-learn fits
    import segmentation_pipeline.core.plots  # noqa: F401 - matplotlib, the report, pandas
    import segmentation_pipeline.core.profiling  # noqa: F401 - segment names
finally:  # a failed import must not leave the workers without a collector
    gc.freeze()
    gc.enable()

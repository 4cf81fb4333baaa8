"""What every asset of the pipeline shares: its group and its retry policy."""

import dagster as dg

GROUP = "segmentation"

# Transient I/O (a busy disk, a file briefly locked by an outside tool) is retried; bad data
# is not: assets raise dg.Failure(allow_retries=False) for it.
TRANSIENT_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)

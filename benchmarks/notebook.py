"""The notebook baseline: what a data scientist would write first, run as a script.

pandas.read_csv, StandardScaler on age / income / spending score, then KMeans(k,
n_init=10, random_state=0) for k = 2..10, keeping the k with the best full silhouette
score. The full silhouette compares every pair of customers, so it is O(n^2) in time
(and in memory without scikit-learn's chunking): fine for hundreds of rows, hopeless
for millions. Run as `python -m benchmarks.notebook CSV` in a fresh process; prints one
JSON line with the chosen k, its silhouette, the compute time and, when the file carries
the true segments, the adjusted Rand index against them.
"""

from __future__ import annotations

import json
import sys
import time

import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.preprocessing import StandardScaler

FEATURES = ("Age", "Annual Income (k$)", "Spending Score (1-100)")
TRUTH = "latent_segment"
K_RANGE = range(2, 11)


def main(argv: list[str]) -> int:
    path = argv[0]
    start = time.perf_counter()
    frame = pd.read_csv(path)
    scaled = StandardScaler().fit_transform(frame[list(FEATURES)].to_numpy(dtype=float))
    best_k, best_score, best_labels = 0, -1.0, None
    for k in K_RANGE:
        labels = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(scaled)
        score = float(silhouette_score(scaled, labels))
        if score > best_score:
            best_k, best_score, best_labels = k, score, labels
    compute_seconds = time.perf_counter() - start
    ari = float(adjusted_rand_score(frame[TRUTH], best_labels)) if TRUTH in frame.columns else None
    print(
        json.dumps(
            {
                "rows": len(frame),
                "k": best_k,
                "silhouette": best_score,
                "ari": ari,
                "compute_seconds": compute_seconds,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

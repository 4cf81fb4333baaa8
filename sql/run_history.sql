-- How did each run go: data volume, chosen model, quality and agreement with the run before?
SELECT run_id, finished_at, n_customers, n_rejected, algorithm, n_segments,
       round(silhouette, 3) AS silhouette, round(ari_vs_previous, 3) AS ari_vs_previous
FROM segmentation_runs
ORDER BY finished_at;

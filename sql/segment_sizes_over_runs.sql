-- How many customers (and what share) did each segment have in each run?
SELECT run_number, finished_at, segment_id, segment_name, n_customers, round(share, 4) AS share
FROM segment_sizes_by_run
ORDER BY run_number, segment_id;

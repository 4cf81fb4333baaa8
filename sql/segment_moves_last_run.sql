-- How many customers moved between each pair of segments in the latest run?
SELECT from_segment_id, from_segment_name, to_segment_id, to_segment_name,
       count(*) AS n_customers
FROM segment_changes_last_run
GROUP BY ALL
ORDER BY n_customers DESC, from_segment_id, to_segment_id;

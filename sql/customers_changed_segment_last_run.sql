-- Which customers changed segment in the latest run, and from which segment to which?
SELECT customer_id, from_segment_id, from_segment_name, to_segment_id, to_segment_name
FROM segment_changes_last_run
ORDER BY customer_id;

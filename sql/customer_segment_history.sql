-- Which segment was customer 0001 in at each run? (change the id to look up another customer)
SELECT r.finished_at, h.run_id, h.segment_id, p.segment_name
FROM customer_segments_history h
JOIN segmentation_runs r USING (run_id)
LEFT JOIN segment_profiles p USING (run_id, segment_id)
WHERE h.customer_id = '0001'
ORDER BY r.finished_at;

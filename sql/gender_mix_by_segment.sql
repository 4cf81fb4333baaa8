-- What is the gender mix of each current segment?
SELECT segment_id, segment_name, gender, count(*) AS n_customers,
       round(count(*) / sum(count(*)) OVER (PARTITION BY segment_id), 3) AS share_of_segment
FROM customer_latest_segment
GROUP BY segment_id, segment_name, gender
ORDER BY segment_id, gender;

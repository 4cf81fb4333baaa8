-- What characterises each current segment, and what should marketing do with it?
SELECT p.segment_id, p.segment_name, p.n_customers, round(p.share, 4) AS share,
       round(p.avg_age, 1) AS avg_age, round(p.avg_annual_income, 1) AS avg_annual_income,
       round(p.avg_spending_score, 1) AS avg_spending_score,
       round(p.female_share, 3) AS female_share, p.recommendation
FROM segment_profiles p
JOIN latest_segmentation_run r USING (run_id)
ORDER BY p.segment_id;

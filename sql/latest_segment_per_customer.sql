-- Which segment is each customer in now (latest run), and what is that segment called?
SELECT customer_id, segment_id, segment_name, gender, age, annual_income, spending_score
FROM customer_latest_segment
ORDER BY customer_id;

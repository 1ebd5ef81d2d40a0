-- Rendered by summarizer from its code with the default configuration; do not edit.
-- Regenerate with: python -m summarizer.render sql
-- Refresh one month in every tier, in one transaction (delete + insert, and the data version
-- moved on with them, so the read API's cache lets go of the month's old numbers).

SET @month = '2024-01-01';  -- the month to refresh: its first day

BEGIN;

DELETE FROM financials_summary_monthly_asin_marketplace WHERE financials_summary_monthly_asin_marketplace.month = @month;

INSERT INTO financials_summary_monthly_asin_marketplace (month, asin, marketplace, metric, brand_id, category_id, value, row_count, refreshed_at) SELECT g.month, g.asin, g.marketplace, g.metric, coalesce(p.brand_id, 0) AS brand_id, CASE WHEN (coalesce(p.brand_id, 0) = 0) THEN 0 ELSE coalesce(c.category_id, 0) END AS category_id, g.value, g.row_count, UTC_TIMESTAMP() AS refreshed_at 
FROM (SELECT f.month AS month, f.asin AS asin, f.marketplace AS marketplace, f.metric AS metric, sum(f.value) AS value, count(*) AS row_count 
FROM financials AS f 
WHERE f.month = @month GROUP BY f.month, f.asin, f.marketplace, f.metric) AS g LEFT OUTER JOIN products AS p ON p.asin = g.asin LEFT OUTER JOIN brands AS b ON b.brand_id = p.brand_id LEFT OUTER JOIN categories AS c ON c.category_id = b.category_id;

DELETE FROM financials_summary_monthly_brand WHERE financials_summary_monthly_brand.month = @month;

INSERT INTO financials_summary_monthly_brand (month, brand_id, marketplace, metric, category_id, value, row_count, refreshed_at) SELECT u.month, u.brand_id, u.marketplace, u.metric, u.category_id, u.value, u.row_count, u.refreshed_at 
FROM (SELECT t1.month AS month, t1.brand_id AS brand_id, t1.marketplace AS marketplace, t1.metric AS metric, t1.category_id AS category_id, sum(t1.value) AS value, sum(t1.row_count) AS row_count, UTC_TIMESTAMP() AS refreshed_at 
FROM financials_summary_monthly_asin_marketplace AS t1 
WHERE t1.month = @month GROUP BY t1.month, t1.brand_id, t1.marketplace, t1.metric, t1.category_id UNION ALL SELECT t1.month AS month, t1.brand_id AS brand_id, 'ALL' AS marketplace, t1.metric AS metric, t1.category_id AS category_id, sum(t1.value) AS value, sum(t1.row_count) AS row_count, UTC_TIMESTAMP() AS refreshed_at 
FROM financials_summary_monthly_asin_marketplace AS t1 
WHERE t1.month = @month GROUP BY t1.month, t1.brand_id, t1.metric, t1.category_id) AS u ORDER BY u.month, u.brand_id, u.marketplace, u.metric;

DELETE FROM financials_summary_monthly_category WHERE financials_summary_monthly_category.month = @month;

INSERT INTO financials_summary_monthly_category (month, category_id, metric, value, row_count, refreshed_at) SELECT t2.month, t2.category_id, t2.metric, sum(t2.value) AS value, sum(t2.row_count) AS row_count, UTC_TIMESTAMP() AS refreshed_at 
FROM financials_summary_monthly_brand AS t2 
WHERE t2.marketplace = 'ALL' AND t2.month = @month GROUP BY t2.month, t2.category_id, t2.metric;

UPDATE summarizer_data_version SET version=(summarizer_data_version.version + 1) WHERE summarizer_data_version.id = 1;

COMMIT;

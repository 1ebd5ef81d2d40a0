-- Rendered by summarizer from its code with the default configuration; do not edit.
-- Regenerate with: python -m summarizer.render sql
-- What `summarizer verify` compares: each tier's totals must equal the raw ones.

-- raw: SUM(value), COUNT(*), SUM(ABS(value)) per month and metric
SELECT financials.month, financials.metric, sum(financials.value) AS sum_1, count(*) AS count_1, sum(abs(financials.value)) AS sum_2 
FROM financials GROUP BY financials.month, financials.metric;

-- tier 1
SELECT financials_summary_monthly_asin_marketplace.month, financials_summary_monthly_asin_marketplace.metric, sum(financials_summary_monthly_asin_marketplace.value) AS sum_1, sum(financials_summary_monthly_asin_marketplace.row_count) AS sum_2 
FROM financials_summary_monthly_asin_marketplace GROUP BY financials_summary_monthly_asin_marketplace.month, financials_summary_monthly_asin_marketplace.metric;

-- tier 2, per marketplace
SELECT financials_summary_monthly_brand.month, financials_summary_monthly_brand.metric, sum(financials_summary_monthly_brand.value) AS sum_1, sum(financials_summary_monthly_brand.row_count) AS sum_2 
FROM financials_summary_monthly_brand 
WHERE financials_summary_monthly_brand.marketplace != 'ALL' GROUP BY financials_summary_monthly_brand.month, financials_summary_monthly_brand.metric;

-- tier 2, ALL rows
SELECT financials_summary_monthly_brand.month, financials_summary_monthly_brand.metric, sum(financials_summary_monthly_brand.value) AS sum_1, sum(financials_summary_monthly_brand.row_count) AS sum_2 
FROM financials_summary_monthly_brand 
WHERE financials_summary_monthly_brand.marketplace = 'ALL' GROUP BY financials_summary_monthly_brand.month, financials_summary_monthly_brand.metric;

-- tier 3
SELECT financials_summary_monthly_category.month, financials_summary_monthly_category.metric, sum(financials_summary_monthly_category.value) AS sum_1, sum(financials_summary_monthly_category.row_count) AS sum_2 
FROM financials_summary_monthly_category GROUP BY financials_summary_monthly_category.month, financials_summary_monthly_category.metric;

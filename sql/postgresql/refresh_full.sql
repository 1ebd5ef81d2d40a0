-- Rendered by summarizer from its code with the default configuration; do not edit.
-- Regenerate with: python -m summarizer.render sql
-- A full refresh by hand: build the tiers beside the live ones, then swap them in at once.
-- (summarizer itself reads the raw table in month chunks where the covering index exists,
-- retries transient errors, takes the run lock and records the run.)

DROP TABLE IF EXISTS financials_summary_monthly_asin_marketplace__new;

DROP TABLE IF EXISTS financials_summary_monthly_asin_marketplace__old;

DROP TABLE IF EXISTS financials_summary_monthly_brand__new;

DROP TABLE IF EXISTS financials_summary_monthly_brand__old;

DROP TABLE IF EXISTS financials_summary_monthly_category__new;

DROP TABLE IF EXISTS financials_summary_monthly_category__old;

DROP TABLE IF EXISTS summarizer_data_version__new;

DROP TABLE IF EXISTS summarizer_data_version__old;

CREATE TABLE financials_summary_monthly_asin_marketplace__new (
	month DATE NOT NULL, 
	asin VARCHAR(64) NOT NULL, 
	marketplace VARCHAR(32) NOT NULL, 
	metric VARCHAR(64) NOT NULL, 
	brand_id BIGINT NOT NULL, 
	category_id BIGINT NOT NULL, 
	value NUMERIC(38, 4) NOT NULL, 
	row_count BIGINT NOT NULL, 
	refreshed_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	CONSTRAINT pk_financials_summary_monthly_asin_marketplace__new PRIMARY KEY (month, asin, marketplace, metric)
);

CREATE TABLE financials_summary_monthly_brand__new (
	month DATE NOT NULL, 
	brand_id BIGINT NOT NULL, 
	marketplace VARCHAR(32) NOT NULL, 
	metric VARCHAR(64) NOT NULL, 
	category_id BIGINT NOT NULL, 
	value NUMERIC(38, 4) NOT NULL, 
	row_count BIGINT NOT NULL, 
	refreshed_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	CONSTRAINT pk_financials_summary_monthly_brand__new PRIMARY KEY (month, brand_id, marketplace, metric)
);

CREATE TABLE financials_summary_monthly_category__new (
	month DATE NOT NULL, 
	category_id BIGINT NOT NULL, 
	metric VARCHAR(64) NOT NULL, 
	value NUMERIC(38, 4) NOT NULL, 
	row_count BIGINT NOT NULL, 
	refreshed_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	CONSTRAINT pk_financials_summary_monthly_category__new PRIMARY KEY (month, category_id, metric)
);

CREATE TABLE summarizer_data_version__new (
	id INTEGER NOT NULL, 
	version BIGINT NOT NULL, 
	CONSTRAINT pk_summarizer_data_version__new PRIMARY KEY (id)
);

INSERT INTO summarizer_data_version__new (id, version) SELECT summarizer_data_version.id, summarizer_data_version.version + 1 AS anon_1 
FROM summarizer_data_version;

INSERT INTO financials_summary_monthly_asin_marketplace__new (month, asin, marketplace, metric, brand_id, category_id, value, row_count, refreshed_at) SELECT g.month, g.asin, g.marketplace, g.metric, coalesce(p.brand_id, 0) AS brand_id, CASE WHEN (coalesce(p.brand_id, 0) = 0) THEN 0 ELSE coalesce(c.category_id, 0) END AS category_id, g.value, g.row_count, (now() AT TIME ZONE 'UTC') AS refreshed_at 
FROM (SELECT f.month AS month, f.asin AS asin, f.marketplace AS marketplace, f.metric AS metric, sum(f.value) AS value, count(*) AS row_count 
FROM financials AS f GROUP BY f.month, f.asin, f.marketplace, f.metric) AS g LEFT OUTER JOIN products AS p ON p.asin = g.asin LEFT OUTER JOIN brands AS b ON b.brand_id = p.brand_id LEFT OUTER JOIN categories AS c ON c.category_id = b.category_id;

INSERT INTO financials_summary_monthly_brand__new (month, brand_id, marketplace, metric, category_id, value, row_count, refreshed_at) SELECT u.month, u.brand_id, u.marketplace, u.metric, u.category_id, u.value, u.row_count, u.refreshed_at 
FROM (SELECT t1.month AS month, t1.brand_id AS brand_id, t1.marketplace AS marketplace, t1.metric AS metric, t1.category_id AS category_id, sum(t1.value) AS value, sum(t1.row_count) AS row_count, (now() AT TIME ZONE 'UTC') AS refreshed_at 
FROM financials_summary_monthly_asin_marketplace__new AS t1 GROUP BY t1.month, t1.brand_id, t1.marketplace, t1.metric, t1.category_id UNION ALL SELECT t1.month AS month, t1.brand_id AS brand_id, 'ALL' AS marketplace, t1.metric AS metric, t1.category_id AS category_id, sum(t1.value) AS value, sum(t1.row_count) AS row_count, (now() AT TIME ZONE 'UTC') AS refreshed_at 
FROM financials_summary_monthly_asin_marketplace__new AS t1 GROUP BY t1.month, t1.brand_id, t1.metric, t1.category_id) AS u ORDER BY u.month, u.brand_id, u.marketplace, u.metric;

INSERT INTO financials_summary_monthly_category__new (month, category_id, metric, value, row_count, refreshed_at) SELECT t2.month, t2.category_id, t2.metric, sum(t2.value) AS value, sum(t2.row_count) AS row_count, (now() AT TIME ZONE 'UTC') AS refreshed_at 
FROM financials_summary_monthly_brand__new AS t2 
WHERE t2.marketplace = 'ALL' GROUP BY t2.month, t2.category_id, t2.metric;

CREATE INDEX ix_financials_summary_monthly_asin_marketplace__new_brand ON financials_summary_monthly_asin_marketplace__new (brand_id, month);

CREATE INDEX ix_financials_summary_monthly_brand__new_category ON financials_summary_monthly_brand__new (category_id, month);

CREATE INDEX ix_financials_summary_monthly_brand__new_market ON financials_summary_monthly_brand__new (marketplace, month, metric);

CREATE INDEX ix_financials_summary_monthly_category__new_category ON financials_summary_monthly_category__new (category_id, month);

ANALYZE financials_summary_monthly_brand__new, financials_summary_monthly_category__new;

-- the swap
BEGIN;
SET LOCAL lock_timeout = '3s';
ALTER TABLE financials_summary_monthly_asin_marketplace RENAME TO financials_summary_monthly_asin_marketplace__old;
ALTER INDEX pk_financials_summary_monthly_asin_marketplace RENAME TO pk_financials_summary_monthly_asin_marketplace__old;
ALTER INDEX ix_financials_summary_monthly_asin_marketplace_brand RENAME TO ix_financials_summary_monthly_asin_marketplace__old_brand;
ALTER TABLE financials_summary_monthly_asin_marketplace__new RENAME TO financials_summary_monthly_asin_marketplace;
ALTER INDEX pk_financials_summary_monthly_asin_marketplace__new RENAME TO pk_financials_summary_monthly_asin_marketplace;
ALTER INDEX ix_financials_summary_monthly_asin_marketplace__new_brand RENAME TO ix_financials_summary_monthly_asin_marketplace_brand;
ALTER TABLE financials_summary_monthly_brand RENAME TO financials_summary_monthly_brand__old;
ALTER INDEX pk_financials_summary_monthly_brand RENAME TO pk_financials_summary_monthly_brand__old;
ALTER INDEX ix_financials_summary_monthly_brand_category RENAME TO ix_financials_summary_monthly_brand__old_category;
ALTER INDEX ix_financials_summary_monthly_brand_market RENAME TO ix_financials_summary_monthly_brand__old_market;
ALTER TABLE financials_summary_monthly_brand__new RENAME TO financials_summary_monthly_brand;
ALTER INDEX pk_financials_summary_monthly_brand__new RENAME TO pk_financials_summary_monthly_brand;
ALTER INDEX ix_financials_summary_monthly_brand__new_category RENAME TO ix_financials_summary_monthly_brand_category;
ALTER INDEX ix_financials_summary_monthly_brand__new_market RENAME TO ix_financials_summary_monthly_brand_market;
ALTER TABLE financials_summary_monthly_category RENAME TO financials_summary_monthly_category__old;
ALTER INDEX pk_financials_summary_monthly_category RENAME TO pk_financials_summary_monthly_category__old;
ALTER INDEX ix_financials_summary_monthly_category_category RENAME TO ix_financials_summary_monthly_category__old_category;
ALTER TABLE financials_summary_monthly_category__new RENAME TO financials_summary_monthly_category;
ALTER INDEX pk_financials_summary_monthly_category__new RENAME TO pk_financials_summary_monthly_category;
ALTER INDEX ix_financials_summary_monthly_category__new_category RENAME TO ix_financials_summary_monthly_category_category;
ALTER TABLE summarizer_data_version RENAME TO summarizer_data_version__old;
ALTER INDEX pk_summarizer_data_version RENAME TO pk_summarizer_data_version__old;
ALTER TABLE summarizer_data_version__new RENAME TO summarizer_data_version;
ALTER INDEX pk_summarizer_data_version__new RENAME TO pk_summarizer_data_version;
COMMIT;

BEGIN;
DROP TABLE IF EXISTS financials_summary_monthly_asin_marketplace__old;
DROP TABLE IF EXISTS financials_summary_monthly_brand__old;
DROP TABLE IF EXISTS financials_summary_monthly_category__old;
DROP TABLE IF EXISTS summarizer_data_version__old;
COMMIT;

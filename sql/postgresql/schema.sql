-- Rendered by summarizer from its code with the default configuration; do not edit.
-- Regenerate with: python -m summarizer.render sql
-- The summary tiers, the run history and the data version (what `summarizer init` creates).

CREATE TABLE IF NOT EXISTS financials_summary_monthly_asin_marketplace (
	month DATE NOT NULL, 
	asin VARCHAR(64) NOT NULL, 
	marketplace VARCHAR(32) NOT NULL, 
	metric VARCHAR(64) NOT NULL, 
	brand_id BIGINT NOT NULL, 
	category_id BIGINT NOT NULL, 
	value NUMERIC(38, 4) NOT NULL, 
	row_count BIGINT NOT NULL, 
	refreshed_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	CONSTRAINT pk_financials_summary_monthly_asin_marketplace PRIMARY KEY (month, asin, marketplace, metric)
);

CREATE INDEX ix_financials_summary_monthly_asin_marketplace_brand ON financials_summary_monthly_asin_marketplace (brand_id, month);

CREATE TABLE IF NOT EXISTS financials_summary_monthly_brand (
	month DATE NOT NULL, 
	brand_id BIGINT NOT NULL, 
	marketplace VARCHAR(32) NOT NULL, 
	metric VARCHAR(64) NOT NULL, 
	category_id BIGINT NOT NULL, 
	value NUMERIC(38, 4) NOT NULL, 
	row_count BIGINT NOT NULL, 
	refreshed_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	CONSTRAINT pk_financials_summary_monthly_brand PRIMARY KEY (month, brand_id, marketplace, metric)
);

CREATE INDEX ix_financials_summary_monthly_brand_category ON financials_summary_monthly_brand (category_id, month);

CREATE INDEX ix_financials_summary_monthly_brand_market ON financials_summary_monthly_brand (marketplace, month, metric);

CREATE TABLE IF NOT EXISTS financials_summary_monthly_category (
	month DATE NOT NULL, 
	category_id BIGINT NOT NULL, 
	metric VARCHAR(64) NOT NULL, 
	value NUMERIC(38, 4) NOT NULL, 
	row_count BIGINT NOT NULL, 
	refreshed_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	CONSTRAINT pk_financials_summary_monthly_category PRIMARY KEY (month, category_id, metric)
);

CREATE INDEX ix_financials_summary_monthly_category_category ON financials_summary_monthly_category (category_id, month);

CREATE TABLE IF NOT EXISTS summarizer_runs (
	id BIGSERIAL NOT NULL, 
	mode VARCHAR(16) NOT NULL, 
	months TEXT, 
	status VARCHAR(16) NOT NULL, 
	started_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, 
	finished_at TIMESTAMP WITHOUT TIME ZONE, 
	data_as_of TIMESTAMP WITHOUT TIME ZONE, 
	rows_asin BIGINT, 
	rows_brand BIGINT, 
	rows_category BIGINT, 
	plan TEXT, 
	steps TEXT, 
	error TEXT, 
	host VARCHAR(255) NOT NULL, 
	pid INTEGER NOT NULL, 
	version VARCHAR(32) NOT NULL, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_summarizer_runs_status ON summarizer_runs (status, started_at);

CREATE TABLE IF NOT EXISTS summarizer_data_version (
	id INTEGER NOT NULL, 
	version BIGINT NOT NULL, 
	CONSTRAINT pk_summarizer_data_version PRIMARY KEY (id)
);

-- the data version's one row, written once (init starts it at the time in milliseconds)
INSERT INTO summarizer_data_version (id, version) VALUES (1, 1);

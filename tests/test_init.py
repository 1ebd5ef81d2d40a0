"""init: idempotent DDL, shape errors that change nothing, --print-sql, --source-indexes."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from summarizer.errors import SchemaError
from summarizer.serve.http import create_app
from summarizer.serve.read import Reader

from .clirun import invoke
from .oracle import load, random_dataset
from .test_api_http import Http


def snapshot(engine):
    """Every table with its columns, primary key and indexes."""
    engine.dispose()
    inspector = inspect(engine)
    return {t: ([(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(t)],
                inspector.get_pk_constraint(t)["constrained_columns"],
                sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(t)))
            for t in sorted(inspector.get_table_names())}


def test_init_twice_changes_nothing(db_url, app_factory):
    app = app_factory(db_url)
    load(app.dialect.engine, random_dataset(rows=50))
    first = app.init(source_indexes=True)
    assert any("CREATE TABLE" in s for s in first.statements)
    after_first = snapshot(app.dialect.engine)
    second = app.init(source_indexes=True)
    assert second.statements == [] and second.online == []
    assert snapshot(app.dialect.engine) == after_first
    app.refresh()  # the swap puts new tables in place; init must still find nothing to do
    assert app.init(source_indexes=True).statements == []


def test_init_creates_the_spec_tables_and_columns(db_url, app_factory):
    app = app_factory(db_url)
    app.init()
    tables = snapshot(app.dialect.engine)
    columns = {t: [c[0] for c in cols] for t, (cols, _pk, _ix) in tables.items()}
    assert columns["financials_summary_monthly_asin_marketplace"] == [
        "month", "asin", "marketplace", "metric", "brand_id", "category_id", "value", "row_count", "refreshed_at"]
    assert columns["financials_summary_monthly_brand"] == [
        "month", "brand_id", "marketplace", "metric", "category_id", "value", "row_count", "refreshed_at"]
    assert columns["financials_summary_monthly_category"] == [
        "month", "category_id", "metric", "value", "row_count", "refreshed_at"]
    assert "summarizer_runs" in tables


def test_a_table_of_the_wrong_shape_is_an_error_and_nothing_is_created(db_url, app_factory):
    app = app_factory(db_url)
    with app.dialect.engine.begin() as conn:
        conn.execute(text("CREATE TABLE financials_summary_monthly_brand (month DATE, brand_id INTEGER, "
                          "marketplace VARCHAR(32), metric VARCHAR(64), value VARCHAR(20))"))
    before = snapshot(app.dialect.engine)
    with pytest.raises(SchemaError) as caught:
        app.init()
    message = str(caught.value)
    assert "financials_summary_monthly_brand" in message
    assert "column value is VARCHAR(20), expected" in message and "missing column row_count" in message
    assert snapshot(app.dialect.engine) == before


def test_a_data_version_table_of_the_wrong_shape_is_an_error(db_url, app_factory):
    app = app_factory(db_url)
    with app.dialect.engine.begin() as conn:
        conn.execute(text("CREATE TABLE summarizer_data_version (id INTEGER NOT NULL PRIMARY KEY, "
                          "version VARCHAR(20))"))
    before = snapshot(app.dialect.engine)
    with pytest.raises(SchemaError) as caught:
        app.init()
    assert "summarizer_data_version" in str(caught.value) and "column version is VARCHAR(20)" in str(caught.value)
    assert snapshot(app.dialect.engine) == before


def test_init_on_an_earlier_install_adds_the_data_version_once(db_url, app_factory):
    """An install made before the data version existed: refresh asks for init, which adds the table and its
    row and nothing else; from then on refreshes move the version."""
    app = app_factory(db_url)
    data = random_dataset(rows=50)
    load(app.dialect.engine, data)
    app.init()
    app.refresh()
    with app.dialect.engine.begin() as conn:
        conn.execute(text("DROP TABLE summarizer_data_version"))
    before = snapshot(app.dialect.engine)
    with pytest.raises(SchemaError) as caught:
        app.refresh()
    assert "summarizer_data_version" in str(caught.value) and "summarizer init" in str(caught.value)
    response = Http(create_app(app)).get("/api/dashboard-data", {"from": "2024-01", "to": "2024-02"})
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_initialised"
    assert "summarizer_data_version" in response.json()["error"]["message"]
    plan = app.init()
    assert len(plan.statements) == 2 and "summarizer_data_version" in plan.statements[0]
    assert plan.statements[1].startswith("INSERT INTO summarizer_data_version")
    after = snapshot(app.dialect.engine)
    assert {name: after[name] for name in before} == before and set(after) - set(before) == {"summarizer_data_version"}
    assert app.init().statements == []
    reader = Reader(app)
    first = reader.version()
    app.refresh(months=data.months[:1])
    assert reader.version() == first + 1 > 1


def test_print_sql_prints_and_creates_nothing(db_url):
    result = invoke(db_url, "init", "--print-sql")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("CREATE TABLE") == 5  # three tiers, the run history, the data version
    assert "INSERT INTO summarizer_data_version" in result.stdout
    from sqlalchemy import create_engine
    engine = create_engine(db_url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_source_indexes_adds_the_covering_index_once(db_url, app_factory):
    app = app_factory(db_url)
    load(app.dialect.engine, random_dataset(rows=50))
    plan = app.init(source_indexes=True)
    assert len(plan.online) == 1
    indexes = {i["name"]: i["column_names"] for i in inspect(app.dialect.engine).get_indexes("financials")}
    assert indexes.get("ix_financials_summarizer") == ["month", "asin", "marketplace", "metric", "value"]
    assert app.init(source_indexes=True).online == []


def test_source_indexes_with_updated_at_adds_the_changed_index(db_url, app_factory):
    app = app_factory(db_url, source_updated_at_column="updated_at")
    load(app.dialect.engine, random_dataset(rows=50))
    app.init(source_indexes=True)
    indexes = {i["name"]: i["column_names"] for i in inspect(app.dialect.engine).get_indexes("financials")}
    assert indexes.get("ix_financials_summarizer_changed") == ["updated_at", "month"]

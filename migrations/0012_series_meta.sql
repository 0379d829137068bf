-- What a source says about a series (Munin plugins' `config`: graph title,
-- category, field label, type, warning/critical ranges), so the dashboard
-- can group, title and draw them as Munin does. One row per series of a
-- host, the latest description winning; it goes with its host.
-- Keyed by the series' identity (name, canonical labels) rather than a
-- series id: a description may arrive in the batch before the series'
-- first bucket.
CREATE TABLE series_meta (
    host_id    INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    labels     TEXT NOT NULL DEFAULT '',
    graph      TEXT NOT NULL,       -- series of one graph share it (`munin.load`)
    ord        INTEGER NOT NULL DEFAULT 0,
    title      TEXT,
    category   TEXT,
    vlabel     TEXT,
    label      TEXT,
    info       TEXT,
    kind       TEXT,                -- GAUGE | DERIVE | COUNTER | ABSOLUTE
    warning    TEXT,                -- Munin ranges: `max`, `min:max`, `min:`
    critical   TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (host_id, name, labels)
) WITHOUT ROWID;
CREATE INDEX series_meta_graph ON series_meta(host_id, graph);

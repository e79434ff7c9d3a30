-- 003: model training results
--
-- Why: the pattern detectors became ML models that are retrained weekly.  We
-- need to know which model version produced which signals, and to compare
-- runs by their validation metrics.  Metrics are jsonb because each model
-- family reports different ones; a GIN index lets the dashboard filter on them.

CREATE TABLE strategy_training_results (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pattern_id         bigint      NOT NULL REFERENCES patterns (id) ON DELETE CASCADE,
    model_name         text        NOT NULL,
    model_version      text        NOT NULL,
    training_start     date        NOT NULL,
    training_end       date        NOT NULL,
    validation_start   date,
    validation_end     date,
    hyperparameters    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    metrics            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    feature_importance jsonb,
    artifact_uri       text,
    status             text        NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
    duration_seconds   integer,
    created_at         timestamptz NOT NULL DEFAULT now(),
    completed_at       timestamptz,
    CONSTRAINT strategy_training_results_model_key UNIQUE (pattern_id, model_name, model_version)
);

COMMENT ON COLUMN strategy_training_results.artifact_uri IS 'Object-storage location of the serialized model';

CREATE INDEX idx_training_results_pattern_created ON strategy_training_results (pattern_id, created_at DESC);
CREATE INDEX idx_training_results_metrics ON strategy_training_results USING gin (metrics jsonb_path_ops);

-- 004: rename patterns to strategies (major refactor)
--
-- Why: a "pattern" grew into a full trading strategy (entry rules, exits,
-- sizing, ML models), and the code had already switched to the word
-- strategy.  Renaming the tables and columns keeps the database readable for
-- new people.  Every implicitly named object (primary keys, foreign keys,
-- checks, identity sequences, indexes) is renamed too, so that the names
-- match what a fresh CREATE TABLE strategies would produce and schema.sql can
-- use natural names.  Deploy the code that reads both names first.

-- patterns -> strategies
ALTER TABLE patterns RENAME TO strategies;
ALTER TABLE strategies RENAME COLUMN pattern_type TO strategy_type;
ALTER TABLE strategies RENAME CONSTRAINT patterns_pkey TO strategies_pkey;
ALTER TABLE strategies RENAME CONSTRAINT patterns_name_key TO strategies_name_key;
ALTER SEQUENCE patterns_id_seq RENAME TO strategies_id_seq;

-- A strategy is more than a chart pattern: allow the new kinds.
ALTER TABLE strategies DROP CONSTRAINT patterns_pattern_type_check;
ALTER TABLE strategies ADD CONSTRAINT strategies_strategy_type_check
    CHECK (strategy_type IN ('reversal', 'continuation', 'breakout', 'mean_reversion', 'momentum', 'ml_model'));

COMMENT ON TABLE strategies IS 'Trading strategies (called patterns before migration 004)';

-- pattern_signals -> strategy_signals
ALTER TABLE pattern_signals RENAME TO strategy_signals;
ALTER TABLE strategy_signals RENAME COLUMN pattern_id TO strategy_id;
ALTER TABLE strategy_signals RENAME CONSTRAINT pattern_signals_pkey TO strategy_signals_pkey;
ALTER TABLE strategy_signals RENAME CONSTRAINT pattern_signals_pattern_id_fkey TO strategy_signals_strategy_id_fkey;
ALTER TABLE strategy_signals RENAME CONSTRAINT pattern_signals_instrument_id_fkey TO strategy_signals_instrument_id_fkey;
ALTER TABLE strategy_signals RENAME CONSTRAINT pattern_signals_direction_check TO strategy_signals_direction_check;
ALTER TABLE strategy_signals RENAME CONSTRAINT pattern_signals_confidence_check TO strategy_signals_confidence_check;
ALTER SEQUENCE pattern_signals_id_seq RENAME TO strategy_signals_id_seq;
ALTER INDEX idx_pattern_signals_pattern_time RENAME TO idx_strategy_signals_strategy_time;
ALTER INDEX idx_pattern_signals_instrument_time RENAME TO idx_strategy_signals_instrument_time;

-- pattern_id -> strategy_id in the tables that point at strategies
ALTER TABLE trades RENAME COLUMN pattern_id TO strategy_id;
ALTER TABLE trades RENAME CONSTRAINT trades_pattern_id_fkey TO trades_strategy_id_fkey;
ALTER INDEX idx_trades_pattern_id RENAME TO idx_trades_strategy_id;

ALTER TABLE backtest_results RENAME COLUMN pattern_id TO strategy_id;
ALTER TABLE backtest_results RENAME CONSTRAINT backtest_results_pattern_id_fkey TO backtest_results_strategy_id_fkey;
ALTER INDEX idx_backtest_results_pattern_id RENAME TO idx_backtest_results_strategy_id;

ALTER TABLE strategy_training_results RENAME COLUMN pattern_id TO strategy_id;
ALTER TABLE strategy_training_results
    RENAME CONSTRAINT strategy_training_results_pattern_id_fkey TO strategy_training_results_strategy_id_fkey;
ALTER INDEX idx_training_results_pattern_created RENAME TO idx_training_results_strategy_created;

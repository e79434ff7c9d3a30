-- 002: backtest results
--
-- Why: backtests ran in notebooks and their numbers lived in screenshots, so
-- nobody could compare a pattern's live results with what the backtest had
-- promised.  Each run now stores its headline metrics (queryable columns),
-- the parameters it used (jsonb, they differ per pattern) and its simulated
-- trades.

CREATE TABLE backtest_results (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pattern_id        bigint        NOT NULL REFERENCES patterns (id) ON DELETE CASCADE,
    instrument_id     bigint        REFERENCES instruments (id) ON DELETE SET NULL,
    timeframe         text          NOT NULL,
    period_start      date          NOT NULL,
    period_end        date          NOT NULL,
    initial_capital   numeric(18,2) NOT NULL,
    final_capital     numeric(18,2),
    total_return      numeric(10,6),
    annualized_return numeric(10,6),
    sharpe_ratio      numeric(10,4),
    sortino_ratio     numeric(10,4),
    max_drawdown      numeric(10,6),
    win_rate          numeric(5,4),
    profit_factor     numeric(10,4),
    total_trades      integer       NOT NULL DEFAULT 0,
    parameters        jsonb         NOT NULL DEFAULT '{}'::jsonb,
    equity_curve      jsonb,
    created_at        timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT backtest_results_period_check CHECK (period_end >= period_start)
);

COMMENT ON COLUMN backtest_results.instrument_id IS 'NULL when the backtest ran over the whole universe';

CREATE INDEX idx_backtest_results_pattern_id ON backtest_results (pattern_id, created_at DESC);

CREATE TABLE backtest_trades (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    backtest_id   bigint        NOT NULL REFERENCES backtest_results (id) ON DELETE CASCADE,
    instrument_id bigint        NOT NULL REFERENCES instruments (id) ON DELETE CASCADE,
    side          text          NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity      numeric(18,8) NOT NULL,
    entry_price   numeric(18,8) NOT NULL,
    exit_price    numeric(18,8),
    entry_time    timestamptz   NOT NULL,
    exit_time     timestamptz,
    pnl           numeric(18,8)
);

CREATE INDEX idx_backtest_trades_backtest_id ON backtest_trades (backtest_id);

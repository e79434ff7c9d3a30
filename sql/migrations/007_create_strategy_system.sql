-- 007: strategy system
--
-- Why: after the rename, strategies needed what the old pattern detector
-- never had: tunable parameters with bounds (the optimizer writes them),
-- performance rolled up per day/week/month (the leaderboard read raw trades
-- and timed out), deployments that say which strategy runs where and in
-- which mode, and hard risk limits the order router checks before sending.

CREATE TABLE strategy_parameters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    strategy_id bigint      NOT NULL REFERENCES strategies (id) ON DELETE CASCADE,
    name        text        NOT NULL,
    value       jsonb       NOT NULL,
    value_type  text        NOT NULL CHECK (value_type IN ('number', 'integer', 'boolean', 'string', 'enum')),
    min_value   numeric,
    max_value   numeric,
    description text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT strategy_parameters_strategy_name_key UNIQUE (strategy_id, name),
    CONSTRAINT strategy_parameters_bounds_check CHECK (min_value IS NULL OR max_value IS NULL OR min_value <= max_value)
);

CREATE TABLE strategy_performance (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    strategy_id    bigint        NOT NULL REFERENCES strategies (id) ON DELETE CASCADE,
    portfolio_id   bigint        REFERENCES portfolios (id) ON DELETE CASCADE,
    period         text          NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly')),
    period_start   date          NOT NULL,
    trades_count   integer       NOT NULL DEFAULT 0,
    winning_trades integer       NOT NULL DEFAULT 0,
    gross_profit   numeric(18,2) NOT NULL DEFAULT 0,
    gross_loss     numeric(18,2) NOT NULL DEFAULT 0,
    net_pnl        numeric(18,2) NOT NULL DEFAULT 0,
    return_pct     numeric(10,6),
    sharpe_ratio   numeric(10,4),
    max_drawdown   numeric(10,6),
    is_paper       boolean       NOT NULL DEFAULT false,
    computed_at    timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT strategy_performance_wins_check CHECK (winning_trades BETWEEN 0 AND trades_count),
    -- portfolio_id is NULL for the strategy-wide rollup: NULLS NOT DISTINCT keeps that row unique too.
    CONSTRAINT strategy_performance_period_key
        UNIQUE NULLS NOT DISTINCT (strategy_id, portfolio_id, period, period_start, is_paper)
);

COMMENT ON TABLE strategy_performance IS 'Rollups of closed trades, recomputed nightly by the stats job';

CREATE INDEX idx_strategy_performance_portfolio_id ON strategy_performance (portfolio_id)
    WHERE portfolio_id IS NOT NULL;

CREATE TABLE strategy_deployments (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    strategy_id         bigint      NOT NULL REFERENCES strategies (id) ON DELETE RESTRICT,
    account_id          bigint      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    portfolio_id        bigint      REFERENCES portfolios (id) ON DELETE SET NULL,
    mode                text        NOT NULL DEFAULT 'paper' CHECK (mode IN ('paper', 'live')),
    status              text        NOT NULL DEFAULT 'stopped' CHECK (status IN ('running', 'paused', 'stopped', 'error')),
    parameters_snapshot jsonb       NOT NULL DEFAULT '{}'::jsonb,
    started_at          timestamptz,
    stopped_at          timestamptz,
    last_heartbeat_at   timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now()
);

COMMENT ON COLUMN strategy_deployments.parameters_snapshot IS 'strategy_parameters as they were when the deployment started';

CREATE INDEX idx_strategy_deployments_strategy_id ON strategy_deployments (strategy_id);
CREATE INDEX idx_strategy_deployments_account_id ON strategy_deployments (account_id);
-- Running the same strategy twice on one account doubles every order.
CREATE UNIQUE INDEX strategy_deployments_running_key ON strategy_deployments (strategy_id, account_id)
    WHERE status = 'running';

CREATE TABLE strategy_risk_limits (
    strategy_id       bigint PRIMARY KEY REFERENCES strategies (id) ON DELETE CASCADE,
    max_position_size numeric(18,8),
    max_daily_loss    numeric(18,2),
    max_open_trades   integer      CHECK (max_open_trades > 0),
    max_leverage      numeric(6,2) NOT NULL DEFAULT 1 CHECK (max_leverage >= 1),
    updated_at        timestamptz  NOT NULL DEFAULT now()
);

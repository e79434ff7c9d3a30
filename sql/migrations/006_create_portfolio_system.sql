-- 006: portfolio system
--
-- Why: users want to run several strategies side by side with a capital
-- split between them, and see equity over time.  A portfolio belongs to a
-- user, optionally trades through one broker account, holds positions,
-- records cash movements, and gets one snapshot per day.  Trades now point
-- at the portfolio they were made for.

CREATE TABLE portfolios (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id             bigint        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    account_id          bigint        REFERENCES accounts (id) ON DELETE SET NULL,
    name                text          NOT NULL,
    description         text,
    base_currency       char(3)       NOT NULL DEFAULT 'USD',
    initial_capital     numeric(18,2) NOT NULL CHECK (initial_capital >= 0),
    is_paper            boolean       NOT NULL DEFAULT true,
    rebalance_frequency text          NOT NULL DEFAULT 'monthly'
                        CHECK (rebalance_frequency IN ('daily', 'weekly', 'monthly', 'quarterly', 'never')),
    created_at          timestamptz   NOT NULL DEFAULT now(),
    updated_at          timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT portfolios_user_name_key UNIQUE (user_id, name)
);

CREATE TABLE portfolio_positions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    portfolio_id  bigint        NOT NULL REFERENCES portfolios (id) ON DELETE CASCADE,
    instrument_id bigint        NOT NULL REFERENCES instruments (id) ON DELETE RESTRICT,
    quantity      numeric(18,8) NOT NULL,
    average_cost  numeric(18,8) NOT NULL,
    opened_at     timestamptz   NOT NULL DEFAULT now(),
    updated_at    timestamptz   NOT NULL DEFAULT now(),
    closed_at     timestamptz
);

COMMENT ON COLUMN portfolio_positions.quantity IS 'Signed: negative for a short position';

-- At most one open position per instrument and portfolio; closed ones are history.
CREATE UNIQUE INDEX portfolio_positions_open_key ON portfolio_positions (portfolio_id, instrument_id)
    WHERE closed_at IS NULL;
CREATE INDEX idx_portfolio_positions_instrument_id ON portfolio_positions (instrument_id);

CREATE TABLE portfolio_transactions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    portfolio_id bigint        NOT NULL REFERENCES portfolios (id) ON DELETE CASCADE,
    trade_id     bigint        REFERENCES trades (id) ON DELETE SET NULL,
    kind         text          NOT NULL
                 CHECK (kind IN ('deposit', 'withdrawal', 'buy', 'sell', 'dividend', 'fee', 'interest')),
    amount       numeric(18,2) NOT NULL,
    currency     char(3)       NOT NULL DEFAULT 'USD',
    occurred_at  timestamptz   NOT NULL DEFAULT now(),
    memo         text
);

CREATE INDEX idx_portfolio_transactions_portfolio_time ON portfolio_transactions (portfolio_id, occurred_at DESC);
CREATE INDEX idx_portfolio_transactions_trade_id ON portfolio_transactions (trade_id) WHERE trade_id IS NOT NULL;

CREATE TABLE portfolio_snapshots (
    portfolio_id    bigint        NOT NULL REFERENCES portfolios (id) ON DELETE CASCADE,
    snapshot_date   date          NOT NULL,
    cash            numeric(18,2) NOT NULL,
    positions_value numeric(18,2) NOT NULL,
    equity          numeric(18,2) NOT NULL,
    daily_return    numeric(12,8),
    drawdown        numeric(10,6),
    PRIMARY KEY (portfolio_id, snapshot_date)
);

CREATE TABLE portfolio_strategy_allocations (
    portfolio_id     bigint       NOT NULL REFERENCES portfolios (id) ON DELETE CASCADE,
    strategy_id      bigint       NOT NULL REFERENCES strategies (id) ON DELETE CASCADE,
    weight           numeric(5,4) NOT NULL CHECK (weight > 0 AND weight <= 1),
    max_position_pct numeric(5,4),
    is_active        boolean      NOT NULL DEFAULT true,
    created_at       timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (portfolio_id, strategy_id)
);

CREATE INDEX idx_portfolio_allocations_strategy_id ON portfolio_strategy_allocations (strategy_id);

ALTER TABLE trades ADD COLUMN portfolio_id bigint REFERENCES portfolios (id) ON DELETE SET NULL;

CREATE INDEX idx_trades_portfolio_id ON trades (portfolio_id) WHERE portfolio_id IS NOT NULL;

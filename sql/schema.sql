-- =============================================================================
-- TradePulse IQ: master schema (the source of truth)
-- =============================================================================
--
-- This file is the database as it should be *now*, written for people to
-- read: grouped by domain, one CREATE per object, no history.  The history
-- lives in sql/migrations/, and `inv check` proves that replaying every
-- migration in order produces exactly this structure (tables, column order,
-- types, defaults, constraints, indexes, views, functions, triggers,
-- sequences, comments).
--
-- To change the schema: edit this file first, then `inv new "description"`
-- and write the migration that gets an existing database from the old state
-- to the new one.  See sql/README.md.
--
-- Conventions:
--   * money and prices are numeric (never float); prices numeric(18,8)
--   * every timestamp is timestamptz
--   * surrogate keys are bigint identity columns (GENERATED ALWAYS)
--   * implicit constraint names (<table>_<column>_check, _fkey, _key, _pkey)
--     are kept; multi-column ones are named explicitly
--   * schema_migrations is owned by opsagent and is not declared here


-- =============================================================================
-- Types
-- =============================================================================

CREATE TYPE trade_side AS ENUM ('buy', 'sell');

CREATE TYPE alert_status AS ENUM ('active', 'triggered', 'snoozed', 'expired', 'disabled');

CREATE TYPE notification_channel AS ENUM ('email', 'push', 'sms', 'webhook');


-- =============================================================================
-- Trigger functions
-- =============================================================================

CREATE FUNCTION set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

COMMENT ON FUNCTION set_updated_at() IS 'BEFORE UPDATE trigger: stamps updated_at';

-- Pinned search_path: the function runs with the privileges and path of
-- whoever fires the trigger, and must always find public.audit_log.
CREATE FUNCTION audit_row_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'public'
    AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO audit_log (table_name, row_id, action, old_data)
        VALUES (TG_TABLE_NAME, OLD.id, TG_OP, to_jsonb(OLD));
        RETURN OLD;
    END IF;
    INSERT INTO audit_log (table_name, row_id, action, old_data, new_data)
    VALUES (TG_TABLE_NAME, NEW.id, TG_OP,
            CASE WHEN TG_OP = 'UPDATE' THEN to_jsonb(OLD) END,
            to_jsonb(NEW));
    RETURN NEW;
END;
$$;

COMMENT ON FUNCTION audit_row_change() IS 'AFTER row trigger: copies the row into audit_log (tables with an id column)';


-- =============================================================================
-- Users and broker accounts
-- =============================================================================

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         text        NOT NULL,
    display_name  text        NOT NULL,
    password_hash text,
    timezone      text        NOT NULL DEFAULT 'UTC',
    is_active     boolean     NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Logins compare e-mail addresses case-insensitively, so uniqueness must too.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

CREATE TRIGGER trg_users_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE accounts (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        bigint        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    broker         text          NOT NULL,
    account_number text          NOT NULL,
    base_currency  char(3)       NOT NULL DEFAULT 'USD',
    cash_balance   numeric(18,2) NOT NULL DEFAULT 0,
    is_active      boolean       NOT NULL DEFAULT true,
    created_at     timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT accounts_broker_account_number_key UNIQUE (broker, account_number)
);

CREATE INDEX idx_accounts_user_id ON accounts (user_id);

CREATE TRIGGER trg_accounts_audit AFTER INSERT OR UPDATE OR DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();


-- =============================================================================
-- Market data: exchanges, instruments, price history
-- =============================================================================

CREATE TABLE exchanges (
    id        integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code      text NOT NULL UNIQUE,
    name      text NOT NULL,
    timezone  text NOT NULL,
    opens_at  time,
    closes_at time
);

COMMENT ON COLUMN exchanges.code IS 'ISO 10383 market identifier code, e.g. XNAS';

CREATE TABLE instruments (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exchange_id integer       NOT NULL REFERENCES exchanges (id) ON DELETE RESTRICT,
    symbol      text          NOT NULL,
    name        text,
    asset_class text          NOT NULL DEFAULT 'equity'
                CHECK (asset_class IN ('equity', 'etf', 'future', 'option', 'forex', 'crypto')),
    currency    char(3)       NOT NULL DEFAULT 'USD',
    tick_size   numeric(18,8) NOT NULL DEFAULT 0.01 CHECK (tick_size > 0),
    lot_size    numeric(18,8) NOT NULL DEFAULT 1 CHECK (lot_size > 0),
    is_tradable boolean       NOT NULL DEFAULT true,
    metadata    jsonb         NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT instruments_exchange_symbol_key UNIQUE (exchange_id, symbol)
);

-- The symbol search box is case-insensitive and ignores the exchange.
CREATE INDEX idx_instruments_symbol_upper ON instruments (upper(symbol));

CREATE TABLE price_bars (
    instrument_id bigint        NOT NULL REFERENCES instruments (id) ON DELETE CASCADE,
    timeframe     text          NOT NULL CHECK (timeframe IN ('1m', '5m', '15m', '1h', '4h', '1d')),
    bar_time      timestamptz   NOT NULL,
    open          numeric(18,8) NOT NULL,
    high          numeric(18,8) NOT NULL,
    low           numeric(18,8) NOT NULL,
    close         numeric(18,8) NOT NULL,
    volume        numeric(24,8) NOT NULL DEFAULT 0,
    PRIMARY KEY (instrument_id, timeframe, bar_time),
    CONSTRAINT price_bars_range_check CHECK (low <= high)
);

COMMENT ON TABLE price_bars IS 'OHLCV candles; bar_time is the start of the bar';


-- =============================================================================
-- Strategies: definitions, parameters, limits, signals, research
-- (strategies were called "patterns" until migration 004)
-- =============================================================================

CREATE TABLE strategies (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text        NOT NULL UNIQUE,
    strategy_type text        NOT NULL
                  CONSTRAINT strategies_strategy_type_check
                  CHECK (strategy_type IN ('reversal', 'continuation', 'breakout', 'mean_reversion',
                                           'momentum', 'ml_model')),
    description   text,
    config        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    is_active     boolean     NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE strategies IS 'Trading strategies (called patterns before migration 004)';

CREATE TRIGGER trg_strategies_updated_at BEFORE UPDATE ON strategies
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER trg_strategies_audit AFTER INSERT OR UPDATE OR DELETE ON strategies
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();

-- Tunable parameters; the optimizer writes value within [min_value, max_value].
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

CREATE TRIGGER trg_strategy_parameters_audit AFTER INSERT OR UPDATE OR DELETE ON strategy_parameters
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();

-- Hard limits the order router checks before sending anything.
CREATE TABLE strategy_risk_limits (
    strategy_id       bigint PRIMARY KEY REFERENCES strategies (id) ON DELETE CASCADE,
    max_position_size numeric(18,8),
    max_daily_loss    numeric(18,2),
    max_open_trades   integer      CHECK (max_open_trades > 0),
    max_leverage      numeric(6,2) NOT NULL DEFAULT 1 CHECK (max_leverage >= 1),
    updated_at        timestamptz  NOT NULL DEFAULT now()
);

CREATE TABLE strategy_signals (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    strategy_id   bigint        NOT NULL REFERENCES strategies (id) ON DELETE CASCADE,
    instrument_id bigint        NOT NULL REFERENCES instruments (id) ON DELETE CASCADE,
    timeframe     text          NOT NULL,
    signal_time   timestamptz   NOT NULL,
    direction     text          NOT NULL CHECK (direction IN ('long', 'short')),
    confidence    numeric(5,4)  CHECK (confidence BETWEEN 0 AND 1),
    price         numeric(18,8),
    features      jsonb         NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz   NOT NULL DEFAULT now()
);

CREATE INDEX idx_strategy_signals_strategy_time ON strategy_signals (strategy_id, signal_time DESC);
CREATE INDEX idx_strategy_signals_instrument_time ON strategy_signals (instrument_id, signal_time DESC);

-- One row per model training run; metrics differ per model family, hence jsonb + GIN.
CREATE TABLE strategy_training_results (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    strategy_id        bigint      NOT NULL REFERENCES strategies (id) ON DELETE CASCADE,
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
    CONSTRAINT strategy_training_results_model_key UNIQUE (strategy_id, model_name, model_version)
);

COMMENT ON COLUMN strategy_training_results.artifact_uri IS 'Object-storage location of the serialized model';

CREATE INDEX idx_training_results_strategy_created ON strategy_training_results (strategy_id, created_at DESC);
CREATE INDEX idx_training_results_metrics ON strategy_training_results USING gin (metrics jsonb_path_ops);

CREATE TABLE backtest_results (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    strategy_id       bigint        NOT NULL REFERENCES strategies (id) ON DELETE CASCADE,
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

CREATE INDEX idx_backtest_results_strategy_id ON backtest_results (strategy_id, created_at DESC);

CREATE TABLE backtest_trades (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    backtest_id   bigint        NOT NULL REFERENCES backtest_results (id) ON DELETE CASCADE,
    instrument_id bigint        NOT NULL REFERENCES instruments (id) ON DELETE CASCADE,
    side          trade_side    NOT NULL,
    quantity      numeric(18,8) NOT NULL,
    entry_price   numeric(18,8) NOT NULL,
    exit_price    numeric(18,8),
    entry_time    timestamptz   NOT NULL,
    exit_time     timestamptz,
    pnl           numeric(18,8)
);

CREATE INDEX idx_backtest_trades_backtest_id ON backtest_trades (backtest_id);


-- =============================================================================
-- Portfolios
-- =============================================================================

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

CREATE TRIGGER trg_portfolios_updated_at BEFORE UPDATE ON portfolios
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

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

CREATE TRIGGER trg_portfolio_positions_updated_at BEFORE UPDATE ON portfolio_positions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

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


-- =============================================================================
-- Strategy operations: where strategies run and how they perform
-- =============================================================================

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


-- =============================================================================
-- Trading: trades, orders, fills, portfolio cash ledger
-- =============================================================================

CREATE TABLE trades (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id         bigint        NOT NULL REFERENCES accounts (id) ON DELETE RESTRICT,
    instrument_id      bigint        NOT NULL REFERENCES instruments (id) ON DELETE RESTRICT,
    strategy_id        bigint        REFERENCES strategies (id) ON DELETE SET NULL,
    signal_id          bigint        REFERENCES strategy_signals (id) ON DELETE SET NULL,
    side               trade_side    NOT NULL,
    quantity           numeric(18,8) NOT NULL CHECK (quantity > 0),
    entry_price        numeric(18,8) NOT NULL,
    exit_price         numeric(18,8),
    stop_loss          numeric(18,8),
    take_profit        numeric(18,8),
    fees               numeric(18,8) NOT NULL DEFAULT 0,
    realized_pnl       numeric(18,8),
    status             text          NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed', 'cancelled')),
    opened_at          timestamptz   NOT NULL DEFAULT now(),
    closed_at          timestamptz,
    notes              text,
    paper_trading_mode boolean       NOT NULL DEFAULT false,
    portfolio_id       bigint        REFERENCES portfolios (id) ON DELETE SET NULL,
    CONSTRAINT trades_closed_after_opened_check CHECK (closed_at IS NULL OR closed_at >= opened_at),
    -- a closed trade without an exit price breaks the P&L job
    CONSTRAINT trades_closed_exit_price_check CHECK (status <> 'closed' OR exit_price IS NOT NULL)
);

COMMENT ON TABLE trades IS 'One round trip (entry and exit) on one instrument';
COMMENT ON COLUMN trades.paper_trading_mode IS 'true for simulated fills: excluded from real-money P&L';

CREATE INDEX idx_trades_account_opened ON trades (account_id, opened_at DESC);
CREATE INDEX idx_trades_instrument_id ON trades (instrument_id);
CREATE INDEX idx_trades_strategy_id ON trades (strategy_id);
CREATE INDEX idx_trades_signal_id ON trades (signal_id);
CREATE INDEX idx_trades_portfolio_id ON trades (portfolio_id) WHERE portfolio_id IS NOT NULL;
-- The risk engine polls open trades every few seconds; they are a tiny share of the table.
CREATE INDEX idx_trades_open ON trades (account_id) WHERE status = 'open';
-- Paper trades are a small slice; real-money queries use idx_trades_account_opened.
CREATE INDEX idx_trades_paper_mode ON trades (account_id, opened_at DESC) WHERE paper_trading_mode;
-- Same expression as v_daily_pnl's trade_date, so "last 30 days" does not scan the table.
CREATE INDEX idx_trades_closed_day ON trades (((closed_at AT TIME ZONE 'UTC')::date)) WHERE status = 'closed';

CREATE TRIGGER trg_trades_audit AFTER INSERT OR UPDATE OR DELETE ON trades
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();

-- Human-readable order references sent to the broker (client order id).
CREATE SEQUENCE order_ref_seq START WITH 100000;

CREATE TABLE orders (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_order_ref bigint        NOT NULL DEFAULT nextval('order_ref_seq') UNIQUE,
    account_id       bigint        NOT NULL REFERENCES accounts (id) ON DELETE RESTRICT,
    instrument_id    bigint        NOT NULL REFERENCES instruments (id) ON DELETE RESTRICT,
    trade_id         bigint        REFERENCES trades (id) ON DELETE SET NULL,
    side             trade_side    NOT NULL,
    order_type       text          NOT NULL DEFAULT 'market'
                     CHECK (order_type IN ('market', 'limit', 'stop', 'stop_limit')),
    quantity         numeric(18,8) NOT NULL CHECK (quantity > 0),
    limit_price      numeric(18,8),
    stop_price       numeric(18,8),
    time_in_force    text          NOT NULL DEFAULT 'day',
    status           text          NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'submitted', 'partially_filled', 'filled', 'cancelled', 'rejected')),
    broker_order_id  text          UNIQUE,
    submitted_at     timestamptz,
    created_at       timestamptz   NOT NULL DEFAULT now(),
    updated_at       timestamptz   NOT NULL DEFAULT now()
);

ALTER SEQUENCE order_ref_seq OWNED BY orders.client_order_ref;

CREATE INDEX idx_orders_account_created ON orders (account_id, created_at DESC);
CREATE INDEX idx_orders_trade_id ON orders (trade_id);
CREATE INDEX idx_orders_working ON orders (status) WHERE status IN ('pending', 'submitted', 'partially_filled');

CREATE TRIGGER trg_orders_updated_at BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE executions (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id            bigint        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    price               numeric(18,8) NOT NULL,
    quantity            numeric(18,8) NOT NULL CHECK (quantity > 0),
    fee                 numeric(18,8) NOT NULL DEFAULT 0,
    liquidity           text          CHECK (liquidity IN ('maker', 'taker')),
    broker_execution_id text,
    executed_at         timestamptz   NOT NULL
);

COMMENT ON TABLE executions IS 'Fills reported by the broker; an order may fill in several parts';

CREATE INDEX idx_executions_order_id ON executions (order_id);

-- Cash movements of a portfolio; buys and sells point at their trade.
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


-- =============================================================================
-- Alerts and notifications
-- =============================================================================

CREATE TABLE alerts (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id           bigint       NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    instrument_id     bigint       REFERENCES instruments (id) ON DELETE CASCADE,
    strategy_id       bigint       REFERENCES strategies (id) ON DELETE CASCADE,
    name              text         NOT NULL,
    condition         jsonb        NOT NULL,
    status            alert_status NOT NULL DEFAULT 'active',
    cooldown          interval     NOT NULL DEFAULT '00:15:00'::interval,
    expires_at        timestamptz,
    last_triggered_at timestamptz,
    created_at        timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT alerts_target_check CHECK (instrument_id IS NOT NULL OR strategy_id IS NOT NULL)
);

COMMENT ON COLUMN alerts.condition IS 'e.g. {"op": "price_above", "value": 182.5} or {"op": "drawdown_above", "value": 0.1}';

CREATE INDEX idx_alerts_user_id ON alerts (user_id);
-- The price watcher only evaluates active alerts of the instruments that ticked.
CREATE INDEX idx_alerts_active_instrument ON alerts (instrument_id) WHERE status = 'active';

CREATE TABLE alert_events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id       bigint        NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    triggered_at   timestamptz   NOT NULL DEFAULT now(),
    observed_value numeric(18,8),
    context        jsonb         NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX idx_alert_events_alert_time ON alert_events (alert_id, triggered_at DESC);

CREATE TABLE notification_preferences (
    user_id           bigint               NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    channel           notification_channel NOT NULL,
    is_enabled        boolean              NOT NULL DEFAULT true,
    address           text,
    quiet_hours_start time,
    quiet_hours_end   time,
    PRIMARY KEY (user_id, channel)
);

COMMENT ON COLUMN notification_preferences.address IS 'E-mail address, phone number or webhook URL; NULL uses the account default';

-- The outbox the sender worker drains.
CREATE TABLE notifications (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        bigint               NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    alert_event_id bigint               REFERENCES alert_events (id) ON DELETE SET NULL,
    channel        notification_channel NOT NULL,
    subject        text                 NOT NULL,
    body           text                 NOT NULL,
    payload        jsonb,
    status         text                 NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed')),
    attempts       smallint             NOT NULL DEFAULT 0,
    created_at     timestamptz          NOT NULL DEFAULT now(),
    sent_at        timestamptz,
    read_at        timestamptz
);

CREATE INDEX idx_notifications_user_unread ON notifications (user_id, created_at DESC) WHERE read_at IS NULL;
-- The sender worker's queue: oldest queued first.
CREATE INDEX idx_notifications_queued ON notifications (created_at) WHERE status = 'queued';


-- =============================================================================
-- Audit trail (written by audit_row_change(); append-only)
-- =============================================================================

CREATE TABLE audit_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name text        NOT NULL,
    row_id     bigint,
    action     text        NOT NULL CHECK (action IN ('INSERT', 'UPDATE', 'DELETE')),
    old_data   jsonb,
    new_data   jsonb,
    changed_by text        NOT NULL DEFAULT CURRENT_USER,
    changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_audit_log_table_row ON audit_log (table_name, row_id);
-- Rows arrive in time order, so a tiny BRIN index serves time-range queries.
CREATE INDEX idx_audit_log_changed_at ON audit_log USING brin (changed_at);


-- =============================================================================
-- Reporting views (shared by the dashboard, the daily e-mail and Grafana)
-- =============================================================================

-- Real-money results per active strategy, best first when ordered by net_pnl.
CREATE VIEW v_strategy_leaderboard AS
SELECT s.id AS strategy_id,
       s.name,
       s.strategy_type,
       sum(p.trades_count) AS trades,
       sum(p.winning_trades) AS winning_trades,
       round(sum(p.winning_trades)::numeric / nullif(sum(p.trades_count), 0), 4) AS win_rate,
       sum(p.net_pnl) AS net_pnl,
       round(avg(p.sharpe_ratio), 4) AS avg_sharpe,
       max(p.max_drawdown) AS worst_drawdown,
       max(p.computed_at) AS last_computed_at
FROM strategies s
JOIN strategy_performance p ON p.strategy_id = s.id AND p.period = 'daily' AND NOT p.is_paper
WHERE s.is_active
GROUP BY s.id, s.name, s.strategy_type;

-- Open positions with the names people search for.
CREATE VIEW v_open_positions AS
SELECT pos.id AS position_id,
       pos.portfolio_id,
       pf.name AS portfolio_name,
       pf.user_id,
       i.symbol,
       e.code AS exchange,
       pos.quantity,
       pos.average_cost,
       pos.quantity * pos.average_cost AS cost_basis,
       pos.opened_at
FROM portfolio_positions pos
JOIN portfolios pf ON pf.id = pos.portfolio_id
JOIN instruments i ON i.id = pos.instrument_id
JOIN exchanges e ON e.id = i.exchange_id
WHERE pos.closed_at IS NULL;

-- Realized P&L per account and UTC day; paper and real money stay apart.
CREATE VIEW v_daily_pnl AS
SELECT t.account_id,
       t.paper_trading_mode,
       (t.closed_at AT TIME ZONE 'UTC')::date AS trade_date,
       count(*) AS trades_closed,
       count(*) FILTER (WHERE t.realized_pnl > 0) AS winning_trades,
       sum(t.realized_pnl) AS realized_pnl,
       sum(t.fees) AS fees
FROM trades t
WHERE t.status = 'closed'
GROUP BY t.account_id, t.paper_trading_mode, (t.closed_at AT TIME ZONE 'UTC')::date;

COMMENT ON VIEW v_daily_pnl IS 'Realized P&L per account and UTC day (closed trades only)';

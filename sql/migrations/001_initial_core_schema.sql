-- 001: initial core schema
--
-- Why: the trading bot kept its trades in CSV files on each worker, which made
-- reconciliation with the broker a manual job.  This is the first PostgreSQL
-- schema: users and their broker accounts, the instrument universe and its
-- price history, the chart patterns the detector finds, and the trades,
-- orders and fills they lead to.  Money and prices are numeric (never float);
-- every timestamp is timestamptz so workers in different zones agree.

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

CREATE TABLE patterns (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text        NOT NULL UNIQUE,
    pattern_type text        NOT NULL
                 CHECK (pattern_type IN ('reversal', 'continuation', 'breakout', 'mean_reversion')),
    description  text,
    config       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    is_active    boolean     NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE patterns IS 'Chart patterns the detector looks for';

CREATE TABLE pattern_signals (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pattern_id    bigint        NOT NULL REFERENCES patterns (id) ON DELETE CASCADE,
    instrument_id bigint        NOT NULL REFERENCES instruments (id) ON DELETE CASCADE,
    timeframe     text          NOT NULL,
    signal_time   timestamptz   NOT NULL,
    direction     text          NOT NULL CHECK (direction IN ('long', 'short')),
    confidence    numeric(5,4)  CHECK (confidence BETWEEN 0 AND 1),
    price         numeric(18,8),
    features      jsonb         NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz   NOT NULL DEFAULT now()
);

CREATE INDEX idx_pattern_signals_pattern_time ON pattern_signals (pattern_id, signal_time DESC);
CREATE INDEX idx_pattern_signals_instrument_time ON pattern_signals (instrument_id, signal_time DESC);

CREATE TABLE trades (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id    bigint        NOT NULL REFERENCES accounts (id) ON DELETE RESTRICT,
    instrument_id bigint        NOT NULL REFERENCES instruments (id) ON DELETE RESTRICT,
    pattern_id    bigint        REFERENCES patterns (id) ON DELETE SET NULL,
    signal_id     bigint        REFERENCES pattern_signals (id) ON DELETE SET NULL,
    side          text          NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity      numeric(18,8) NOT NULL CHECK (quantity > 0),
    entry_price   numeric(18,8) NOT NULL,
    exit_price    numeric(18,8),
    stop_loss     numeric(18,8),
    take_profit   numeric(18,8),
    fees          numeric(18,8) NOT NULL DEFAULT 0,
    realized_pnl  numeric(18,8),
    status        text          NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed', 'cancelled')),
    opened_at     timestamptz   NOT NULL DEFAULT now(),
    closed_at     timestamptz,
    notes         text,
    CONSTRAINT trades_closed_after_opened_check CHECK (closed_at IS NULL OR closed_at >= opened_at)
);

COMMENT ON TABLE trades IS 'One round trip (entry and exit) on one instrument';

CREATE INDEX idx_trades_account_opened ON trades (account_id, opened_at DESC);
CREATE INDEX idx_trades_instrument_id ON trades (instrument_id);
CREATE INDEX idx_trades_pattern_id ON trades (pattern_id);
CREATE INDEX idx_trades_signal_id ON trades (signal_id);
-- The risk engine polls open trades every few seconds; they are a tiny share of the table.
CREATE INDEX idx_trades_open ON trades (account_id) WHERE status = 'open';

-- Human-readable order references sent to the broker (client order id).
CREATE SEQUENCE order_ref_seq START WITH 100000;

CREATE TABLE orders (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_order_ref bigint        NOT NULL DEFAULT nextval('order_ref_seq') UNIQUE,
    account_id       bigint        NOT NULL REFERENCES accounts (id) ON DELETE RESTRICT,
    instrument_id    bigint        NOT NULL REFERENCES instruments (id) ON DELETE RESTRICT,
    trade_id         bigint        REFERENCES trades (id) ON DELETE SET NULL,
    side             text          NOT NULL CHECK (side IN ('buy', 'sell')),
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

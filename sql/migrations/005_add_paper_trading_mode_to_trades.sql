-- 005: paper trading mode on trades
--
-- Why: new strategies run on paper for a few weeks before they get real
-- money, and paper trades were polluting the P&L reports.  The flag is
-- NOT NULL DEFAULT false so existing rows are real trades without a table
-- rewrite (a constant default is stored in the catalog).  Only paper trades
-- are indexed: reports about them scan a small slice, real-money queries
-- already use idx_trades_account_opened.

ALTER TABLE trades ADD COLUMN paper_trading_mode boolean NOT NULL DEFAULT false;

COMMENT ON COLUMN trades.paper_trading_mode IS 'true for simulated fills: excluded from real-money P&L';

CREATE INDEX idx_trades_paper_mode ON trades (account_id, opened_at DESC) WHERE paper_trading_mode;

-- opsagent:no-transaction
--
-- 012: validate the exit-price check; index trades by UTC close day
--
-- Why: v_daily_pnl groups closed trades by UTC day, and with years of trades
-- the dashboard's "last 30 days" query scanned the whole table.  An
-- expression index on the same expression the view uses fixes that.  trades
-- is large and written all day, so the index is built CONCURRENTLY, which
-- cannot run inside a transaction: hence the no-transaction marker above.
-- If the build fails, drop the INVALID index and run the migration again.
--
-- VALIDATE CONSTRAINT only takes a SHARE UPDATE EXCLUSIVE lock, so writes
-- continue while it checks the rows that existed before migration 011.

ALTER TABLE trades VALIDATE CONSTRAINT trades_closed_exit_price_check;

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_trades_closed_day
    ON trades (((closed_at AT TIME ZONE 'UTC')::date))
    WHERE status = 'closed';

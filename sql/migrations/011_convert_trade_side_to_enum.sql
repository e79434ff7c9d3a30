-- 011: trade_side enum, and closed trades must have an exit price
--
-- Why: side was free text guarded by three copies of the same CHECK (trades,
-- orders, backtest_trades); a "BUY" from a new broker adapter slipped past
-- one of them.  One enum type is the single definition, and it is smaller
-- on disk.  The column type change rewrites the three tables: run it in the
-- maintenance window.
--
-- A closed trade without an exit price breaks the P&L job.  The new CHECK
-- is added NOT VALID (no full scan under an exclusive lock here) and
-- validated by migration 012 once the old rows have been fixed.

CREATE TYPE trade_side AS ENUM ('buy', 'sell');

ALTER TABLE trades DROP CONSTRAINT trades_side_check;
ALTER TABLE trades ALTER COLUMN side TYPE trade_side USING side::trade_side;

ALTER TABLE orders DROP CONSTRAINT orders_side_check;
ALTER TABLE orders ALTER COLUMN side TYPE trade_side USING side::trade_side;

ALTER TABLE backtest_trades DROP CONSTRAINT backtest_trades_side_check;
ALTER TABLE backtest_trades ALTER COLUMN side TYPE trade_side USING side::trade_side;

ALTER TABLE trades ADD CONSTRAINT trades_closed_exit_price_check
    CHECK (status <> 'closed' OR exit_price IS NOT NULL) NOT VALID;

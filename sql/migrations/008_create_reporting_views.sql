-- 008: reporting views
--
-- Why: the dashboard, the daily e-mail and the ops Grafana each had their own
-- copy of these queries, and they disagreed (one counted paper trades, one
-- did not).  One definition in the database, used by all three.

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

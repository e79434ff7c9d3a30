-- 010: audit trail and updated_at triggers
--
-- Why: after a strategy's parameters were changed by hand in production and
-- nobody could say when or by whom, compliance asked for an audit trail on
-- money-relevant tables.  A trigger writes the old and new row as jsonb into
-- audit_log (append-only, so a BRIN index on the time column is enough).
-- The updated_at columns were also only as reliable as the code that set
-- them; a trigger now maintains them.

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
CREATE INDEX idx_audit_log_changed_at ON audit_log USING brin (changed_at);

CREATE FUNCTION set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

COMMENT ON FUNCTION set_updated_at() IS 'BEFORE UPDATE trigger: stamps updated_at';

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

CREATE TRIGGER trg_users_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER trg_strategies_updated_at BEFORE UPDATE ON strategies
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER trg_orders_updated_at BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER trg_portfolios_updated_at BEFORE UPDATE ON portfolios
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER trg_portfolio_positions_updated_at BEFORE UPDATE ON portfolio_positions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TRIGGER trg_trades_audit AFTER INSERT OR UPDATE OR DELETE ON trades
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER trg_strategies_audit AFTER INSERT OR UPDATE OR DELETE ON strategies
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER trg_strategy_parameters_audit AFTER INSERT OR UPDATE OR DELETE ON strategy_parameters
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
CREATE TRIGGER trg_accounts_audit AFTER INSERT OR UPDATE OR DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION audit_row_change();
